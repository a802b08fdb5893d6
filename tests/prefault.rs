//! A mapped model's pages are faulted in on a background thread right after
//! the load, before any prompt, so that the first prompt does not take the
//! whole file's page faults, and the map asks for 2 MB pages on Linux. In
//! its own binary: no other test maps the file while it reads this
//! process's page tables.

mod common;

use std::time::{Duration, Instant};

use phi_mobile::*;

#[test]
fn a_loaded_models_file_is_in_the_page_tables_before_its_first_prompt() {
    let path = common::smollm2_path();
    let size = std::fs::metadata(&path).unwrap().len();
    let model = LanguageModel::load(ModelConfig::new(path.display().to_string())).unwrap();
    assert!(model.info().weights_mapped);
    // Without the prefault only the pages the load read (the header, the
    // vocabulary, the norms) are mapped in: a few MB of SmolLM2's 98 (above
    // the size a prefault thread starts at).
    let started = Instant::now();
    let mut resident = common::smaps_total(&path, "Rss:");
    while resident + 4096 < size && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
        resident = common::smaps_total(&path, "Rss:");
    }
    assert!(resident + 4096 >= size, "{resident} of {size} bytes in the page tables after {:?}", started.elapsed());
    // Decode reads every weight per token: the map asks for 2 MB pages
    // (`hg`), which the kernel uses where the file system allows.
    #[cfg(target_os = "linux")]
    if std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
        let flags = common::smaps_fields(&path, "VmFlags:");
        assert!(!flags.is_empty() && flags.iter().all(|f| f.iter().any(|w| w == "hg")), "the map's flags: {flags:?}");
    }
    drop(model);
    assert_eq!(common::smaps_total(&path, "Size:"), 0, "closing the model stops the thread and unmaps the file");
}
