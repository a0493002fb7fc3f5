pub mod salt;
