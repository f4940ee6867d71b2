//! Rebuilds when a migration is added: `sqlx::migrate!` embeds the migrations folders at
//! compile time, and cargo would not otherwise notice a new file in them.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
