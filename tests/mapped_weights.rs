//! The weights are the model file's mapped pages, not a heap copy: a phone
//! can reclaim them under memory pressure instead of ending the app. One
//! test in its own binary, so no other test's allocations move the
//! process's anonymous memory while it measures.

mod common;

use phi_mobile::*;

/// `RssAnon` of this process: memory the OS can only reclaim by ending it.
fn anonymous_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).expect("RssAnon in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn answer(model: &LanguageModel) -> Vec<i32> {
    let params = GenerationParams::greedy(8);
    model.generate("The capital of France is".into(), params, common::Collect::new(), None).unwrap().token_ids
}

#[test]
fn weights_are_file_backed_and_a_heap_copy_only_when_asked() {
    let path = common::smollm2_path();
    let size = std::fs::metadata(&path).unwrap().len();

    let before = anonymous_bytes();
    let model = LanguageModel::load(ModelConfig::new(path.display().to_string())).unwrap();
    let mapped_ids = answer(&model);
    let grew = anonymous_bytes().saturating_sub(before);
    assert!(model.info().weights_mapped);
    assert!(
        common::smaps_total(&path, "Size:") >= size,
        "the whole file is mapped: {} of {size} bytes",
        common::smaps_total(&path, "Size:")
    );
    // Norms, rotary tables, buffers and the tokenizer, not the 98 MB of weights.
    assert!(grew < size / 3, "anonymous memory grew by {grew} bytes for a {size}-byte file");
    drop(model);
    assert_eq!(common::smaps_total(&path, "Size:"), 0, "closing the model unmaps its file");

    let before = anonymous_bytes();
    let config = ModelConfig { map_weights: false, ..ModelConfig::new(path.display().to_string()) };
    let model = LanguageModel::load(config).unwrap();
    let read_ids = answer(&model);
    let grew = anonymous_bytes().saturating_sub(before);
    assert!(!model.info().weights_mapped);
    assert_eq!(common::smaps_total(&path, "Size:"), 0, "read, not mapped");
    assert!(grew >= size, "a heap copy of the {size}-byte file, but anonymous memory grew by {grew}");
    assert_eq!(read_ids, mapped_ids, "the same weights give the same answer");
}
