//! Printing events: one JSON line `{"tag": ..., "data": {...}}` per event (or indented with
//! `--pretty`), flushed as it happens.

use crate::event::Event;
use std::io::Write;
use tokio::sync::mpsc;

/// Format one event for stdout.
pub fn render(event: &Event, pretty: bool) -> String {
    let v = event.to_json();
    let text = if pretty {
        serde_json::to_string_pretty(&v)
    } else {
        serde_json::to_string(&v)
    };
    // Serialising a JSON value cannot fail; fall back to the compact Display form anyway.
    text.unwrap_or_else(|_| v.to_string())
}

/// Write one event and flush; false when stdout is gone (e.g. a closed pipe).
pub fn print(event: &Event, pretty: bool) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", render(event, pretty)).is_ok() && out.flush().is_ok()
}

/// The `--stdout` sink: print every event until the channel closes or stdout is gone.
pub async fn print_all(mut rx: mpsc::Receiver<Event>, pretty: bool) {
    while let Some(event) = rx.recv().await {
        if !print(&event, pretty) {
            return;
        }
    }
}
