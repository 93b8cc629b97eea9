//! Runs every shared test vector in `core/vectors/`.

use std::path::Path;

#[test]
fn shared_vectors_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors");
    let mut files = 0;
    let mut vectors = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let json = std::fs::read_to_string(&path).unwrap();
            vectors += oxiflow_core::vectors::run_file(&json).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            files += 1;
        }
    }
    assert!(files >= 1 && vectors >= 20, "found {files} files, {vectors} vectors");
    println!("{vectors} vectors in {files} files passed");
}
