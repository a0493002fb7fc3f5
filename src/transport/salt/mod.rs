//! Salt's ZeroMQ request channel: `_auth`, then `_minion_event`.
