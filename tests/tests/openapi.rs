//! The control API's OpenAPI 3.1 document, as a real `tocsind` serves it, passes the
//! reference validator (`openapi-spec-validator` from PyPI, pinned); skipped with a
//! printed reason where Python is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use tocsin_tests::{python_tool, run, Fed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_is_valid_openapi_3_1() {
    let fed = Fed::start(1, vec![]).await;
    let spec = fed.cluster.nodes[0]
        .client()
        .get("/v1/openapi.json")
        .await
        .unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    assert!(spec["paths"]["/v1/alerts"]["post"].is_object());
    // The cluster enables test control: those routes are served, so described.
    assert!(spec["paths"]["/v1/test/partition"]["post"].is_object());
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("openapi.json");
    std::fs::write(&good, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    let mut broken_spec = spec.clone();
    broken_spec.as_object_mut().unwrap().remove("info");
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, broken_spec.to_string()).unwrap();
    match python_tool("openapi-validator", &["openapi-spec-validator==0.7.2"]) {
        Ok(venv) => {
            let bin = venv.join("bin/openapi-spec-validator");
            let (out, err, code) = run(Command::new(&bin).arg(&good));
            assert_eq!(code, 0, "openapi-spec-validator refused it:\n{out}\n{err}");
            let (_, _, code) = run(Command::new(&bin).arg(&broken));
            assert_ne!(code, 0, "a document without info passed the validator");
        }
        Err(why) => eprintln!("SKIPPED the OpenAPI validator check: {why}"),
    }
}
