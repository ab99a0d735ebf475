//! Loading then saving gives back the same notebook, for a varied corpus; every saved file is
//! valid for nbformat itself.

use std::path::{Path, PathBuf};

use quire_tests::{repo_root, run_python, TestServer, YClient};

/// The committed corpus plus the large notebooks, generated into `dir`.
fn corpus(dir: &Path) -> Vec<PathBuf> {
    let (code, out, err) = run_python(
        "tests/corpus/make_corpus.py",
        &[dir.to_str().unwrap(), "--large"],
    );
    assert_eq!(code, 0, "make_corpus failed: {out}{err}");
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("tests/corpus"))
        .unwrap()
        .chain(std::fs::read_dir(dir).unwrap())
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "ipynb"))
        .collect();
    files.sort();
    files.dedup_by(|a, b| a.file_name() == b.file_name());
    for expected in [
        "thousand-cells.ipynb",
        "big-outputs.ipynb",
        "v4.0.ipynb",
        "empty.ipynb",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(expected)),
            "corpus lacks {expected}"
        );
    }
    files
}

fn assert_same_and_valid(pairs: &[(PathBuf, PathBuf)]) {
    let saved: Vec<&str> = pairs.iter().map(|(_, s)| s.to_str().unwrap()).collect();
    let (code, out, err) = run_python("tests/py/validate.py", &saved);
    assert_eq!(
        code, 0,
        "nbformat.validate refused a saved file:\n{out}{err}"
    );
    for (original, saved) in pairs {
        let (code, out, err) = run_python(
            "tests/py/nbdiff.py",
            &[original.to_str().unwrap(), saved.to_str().unwrap()],
        );
        assert_eq!(
            code,
            0,
            "{} changed in the round trip:\n{out}{err}",
            original.display()
        );
    }
}

#[test]
fn the_corpus_round_trips_through_the_y_document() {
    let generated = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut pairs = Vec::new();
    for original in corpus(generated.path()) {
        let notebook = collab::Notebook::from_ipynb(&std::fs::read(&original).unwrap()).unwrap();
        let doc = notebook.to_doc();
        let back = collab::Notebook::from_doc(&yrs::Transact::transact(&doc));
        let saved = out.path().join(original.file_name().unwrap());
        std::fs::write(&saved, back.to_ipynb()).unwrap();
        pairs.push((original, saved));
    }
    assert_same_and_valid(&pairs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_corpus_round_trips_through_the_server() {
    let generated = tempfile::tempdir().unwrap();
    let files = corpus(generated.path());
    let contents: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|f| {
            (
                f.file_name().unwrap().to_str().unwrap().to_string(),
                std::fs::read(f).unwrap(),
            )
        })
        .collect();
    let named: Vec<(&str, &[u8])> = contents
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let server = TestServer::start(&named);
    let mut pairs = Vec::new();
    for (i, original) in files.iter().enumerate() {
        let name = original.file_name().unwrap().to_str().unwrap();
        let mut client = YClient::join(&server, name).await;
        let expected = collab::Notebook::from_ipynb(&std::fs::read(original).unwrap()).unwrap();
        assert_eq!(
            client.notebook().cells.len(),
            expected.cells.len(),
            "{name}"
        );
        // An edit and its undo make the room rewrite the file itself.
        if !expected.cells.is_empty() {
            client.append_and_wait_echo(0, "x").await;
            client
                .edit(|txn| {
                    let source = collab::notebook::cell_source(txn, 0).unwrap();
                    let len = yrs::Text::len(&source, txn);
                    yrs::Text::remove_range(&source, txn, len - 1, 1);
                })
                .await;
        }
        let status = client.save(i as u64).await;
        assert!(status == "success", "{name}: save {status}");
        pairs.push((original.clone(), server.path(name)));
    }
    assert_same_and_valid(&pairs);
}
