//! The migrations are embedded at compile time (`sqlx::migrate!` in `src/store/sqlite.rs` and
//! `src/store/postgres.rs`), and a macro cannot see a file added to their folders: without
//! this, a new migration is left out of the binary until something else changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
