//! Saving a chat and restoring it in another process (SmolLM2-135M): the
//! next turn equals the uninterrupted chat's, served from the restored
//! cache; a file that is not this model's, truncated or corrupt is refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{smollm2, smollm2_path, Collect};
use phi_mobile::*;

const FIRST: &str = "Name three rivers.";
const SECOND: &str = "Which of them is the longest?";

fn system() -> Vec<ChatMessage> {
    vec![ChatMessage::new(Role::System, "You answer in one short sentence.")]
}

fn send(session: &ChatSession, text: &str) -> GenerationResult {
    session.send(text.into(), GenerationParams::greedy(24), Collect::new(), None).unwrap()
}

/// A chat after its first turn, saved to a new file.
fn saved_chat(dir: &Path) -> (Arc<ChatSession>, PathBuf) {
    let session = smollm2().new_session(system());
    send(&session, FIRST);
    let path = dir.join("chat.phichat");
    session.save(path.display().to_string()).unwrap();
    (session, path)
}

fn ids(v: &[i32]) -> String {
    v.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

#[test]
fn a_chat_restored_in_another_process_answers_as_the_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let (session, path) = saved_chat(dir.path());
    let out = dir.path().join("child.txt");
    // The restore runs in a new process: nothing survives but the file.
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "restore_in_a_child_process", "--ignored", "--nocapture"])
        .env("SAVED_CHAT", &path)
        .env("SAVED_CHAT_OUT", &out)
        .status()
        .unwrap();
    assert!(child.success(), "the child failed");
    let uninterrupted = send(&session, SECOND);
    let restored = std::fs::read_to_string(&out).unwrap();
    let (restored_ids, cached) = restored.split_once(' ').unwrap();
    assert_eq!(restored_ids, ids(&uninterrupted.token_ids), "the restored chat's next turn");
    // Served from the restored cache: only the new turn was run.
    assert_eq!(cached.parse::<i32>().unwrap(), uninterrupted.cached_prompt_tokens);
    assert!(uninterrupted.cached_prompt_tokens > 30, "{}", uninterrupted.cached_prompt_tokens);
}

/// The other half of the test above (run by it, in its own process).
#[test]
#[ignore]
fn restore_in_a_child_process() {
    let (Some(path), Some(out)) = (std::env::var_os("SAVED_CHAT"), std::env::var_os("SAVED_CHAT_OUT")) else {
        return;
    };
    let session = smollm2().restore_session(path.to_string_lossy().into()).unwrap();
    let history = session.history();
    assert_eq!(history.len(), 3, "system, user, assistant");
    assert_eq!((history[0].content.as_str(), history[1].content.as_str()), (system()[0].content.as_str(), FIRST));
    let next = send(&session, SECOND);
    std::fs::write(out, format!("{} {}", ids(&next.token_ids), next.cached_prompt_tokens)).unwrap();
}

fn refused(model: &LanguageModel, path: &Path) -> String {
    match model.restore_session(path.display().to_string()) {
        Err(LlmError::InvalidSavedChat { reason }) => reason,
        Err(e) => panic!("expected InvalidSavedChat, got {e:?}"),
        Ok(_) => panic!("{} was restored", path.display()),
    }
}

#[test]
fn a_truncated_flipped_foreign_or_missing_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = saved_chat(dir.path());
    let good = std::fs::read(&path).unwrap();
    let bad = dir.path().join("bad.phichat");
    let model = smollm2();

    // Cut anywhere: in the header, the messages, the tokens, the cache, the checksum.
    for len in [0, 7, 40, 70, 200, good.len() / 2, good.len() - 5, good.len() - 1] {
        std::fs::write(&bad, &good[..len]).unwrap();
        refused(&model, &bad);
    }
    let mut longer = good.clone();
    longer.push(0);
    std::fs::write(&bad, &longer).unwrap();
    refused(&model, &bad);
    // One flipped bit anywhere past the header (which has its own checks).
    for at in [70, 100, 300, good.len() / 3, good.len() / 2, good.len() - 10, good.len() - 2] {
        let mut flipped = good.clone();
        flipped[at] ^= 0x10;
        std::fs::write(&bad, &flipped).unwrap();
        refused(&model, &bad);
    }
    let mut version = good.clone();
    version[8] = 9;
    std::fs::write(&bad, &version).unwrap();
    assert!(refused(&model, &bad).contains("version 9"));

    // The same file again is fine (the refusals above were the edits).
    assert!(model.restore_session(path.display().to_string()).is_ok());

    // Another model (the synthetic Phi-3) refuses it before reading the rest.
    let other = LanguageModel::load(common::config(&common::reference_model_path())).unwrap();
    assert!(refused(&other, &path).contains("another model"));
    // The same weights with a smaller context than the chat holds.
    let small = LanguageModel::load(ModelConfig {
        context_length: Some(16),
        ..ModelConfig::new(smollm2_path().display().to_string())
    })
    .unwrap();
    assert!(refused(&small, &path).contains("context"));
    assert!(refused(&model, &dir.path().join("none.phichat")).contains("no saved chat"));
    assert!(refused(&model, &smollm2_path()).contains("not a saved chat"));
}

#[test]
fn saving_replaces_the_file_whole_and_from_inside_the_sink_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let (session, path) = saved_chat(dir.path());
    let first = std::fs::metadata(&path).unwrap().len();
    send(&session, SECOND);
    session.save(path.display().to_string()).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > first, "the longer chat replaced the file");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "no partial file left: {names:?}");
    let restored = smollm2().restore_session(path.display().to_string()).unwrap();
    assert_eq!(restored.history(), session.history());

    struct SaveInside {
        session: std::sync::Mutex<Option<Arc<ChatSession>>>,
        path: String,
        result: std::sync::Mutex<Option<Result<(), LlmError>>>,
    }
    impl TokenSink for SaveInside {
        fn on_text(&self, _: String) -> Result<bool, LlmError> {
            if let Some(s) = self.session.lock().unwrap().take() {
                *self.result.lock().unwrap() = Some(s.save(self.path.clone()));
            }
            Ok(true)
        }
    }
    let sink = Arc::new(SaveInside {
        session: std::sync::Mutex::new(Some(session.clone())),
        path: dir.path().join("inside.phichat").display().to_string(),
        result: Default::default(),
    });
    session.send("And the shortest?".into(), GenerationParams::greedy(4), sink.clone(), None).unwrap();
    assert!(matches!(sink.result.lock().unwrap().take(), Some(Err(LlmError::Busy { .. }))));
    // A directory that does not exist is a storage error.
    assert!(matches!(session.save("/nonexistent/dir/chat".into()), Err(LlmError::Storage { .. })));
}

#[test]
fn trim_releases_cache_memory_and_the_next_turn_is_unchanged() {
    let model = smollm2();
    let per_token = model.info().kv_bytes_per_token;
    // 30 layers × keys and values × 3 KV heads × 64 × f16.
    assert_eq!(per_token, 30 * 2 * 3 * 64 * 2);
    let session = model.new_session(system());
    // A long first turn takes the cache past one 256-position step...
    let long = format!("Summarize this: {}", "The river runs past the old mill and the town. ".repeat(40));
    send(&session, &long);
    let grown = session.kv_cache_bytes();
    assert!(grown >= 512 * per_token, "{grown}");
    // ...then a reset and a short turn hold less than one step.
    session.reset();
    let short = send(&session, FIRST);
    assert_eq!(session.kv_cache_bytes(), grown, "the room is kept for reuse");
    session.trim();
    assert_eq!(session.kv_cache_bytes(), 256 * per_token, "trimmed to the step the chat fills");
    let next = send(&session, SECOND);
    let fresh = model.new_session(session.history()[..3].to_vec());
    assert_eq!(send(&fresh, SECOND).token_ids, next.token_ids);
    assert!(short.generated_tokens > 0);

    // After a reset the old chat goes too, but for the first messages,
    // which the next turn still reuses.
    session.send(long.clone(), GenerationParams::greedy(1), Collect::new(), None).unwrap();
    assert!(session.kv_cache_bytes() >= 512 * per_token);
    session.reset();
    session.trim();
    assert_eq!(session.kv_cache_bytes(), 256 * per_token);
    let after = send(&session, FIRST);
    assert!(after.cached_prompt_tokens > 5, "the system prompt stayed: {}", after.cached_prompt_tokens);
    assert_eq!(after.token_ids, send(&model.new_session(system()), FIRST).token_ids);

    // Memory facts an app can plan with.
    let file = model.info().file_size_bytes;
    let estimate = |context| model.memory_estimate_bytes(context).unwrap();
    assert_eq!(estimate(1000) - estimate(0), 1000 * per_token);
    assert!(estimate(0) > file);
    // The same estimate before a load, from the file's header alone.
    let path = smollm2_path().display().to_string();
    assert_eq!(estimate_model_memory(path.clone(), Some(1000)).unwrap(), estimate(1000));
    assert_eq!(estimate_model_memory(path.clone(), None).unwrap(), estimate(i32::MAX));
    // A negative context is the caller's mistake, before and after a load.
    for e in [model.memory_estimate_bytes(-1), estimate_model_memory(path, Some(-1))] {
        assert!(matches!(e, Err(LlmError::InvalidParameter { ref name, .. }) if name == "context_length"), "{e:?}");
    }
    assert!(matches!(estimate_model_memory("/nonexistent.gguf".into(), None), Err(LlmError::ModelNotFound { .. })));
    let not_gguf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_gguf.path(), b"not a model").unwrap();
    assert!(matches!(
        estimate_model_memory(not_gguf.path().display().to_string(), None),
        Err(LlmError::InvalidModel { .. })
    ));
    let resident = model.weights_resident_bytes().expect("Linux reports residency");
    assert!(resident > file / 2 && resident <= file, "{resident} of {file}");
}

#[test]
fn a_chat_without_turns_and_a_cache_of_the_other_precision_restore() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.phichat");
    let model = smollm2();
    // Nothing generated yet: the file holds the first messages and no cache.
    model.new_session(system()).save(path.display().to_string()).unwrap();
    let restored = model.restore_session(path.display().to_string()).unwrap();
    assert_eq!(restored.history(), system());
    assert_eq!(send(&restored, FIRST).token_ids, send(&model.new_session(system()), FIRST).token_ids);

    // An f16 cache restored into a model that keeps f32 is widened (exact), and goes on.
    let (session, path) = saved_chat(dir.path());
    let f32_model = LanguageModel::load(ModelConfig {
        kv_cache_f32: true,
        ..ModelConfig::new(smollm2_path().display().to_string())
    })
    .unwrap();
    let widened = f32_model.restore_session(path.display().to_string()).unwrap();
    assert_eq!(widened.history(), session.history());
    let next = send(&widened, SECOND);
    assert_eq!(next.cached_prompt_tokens, send(&session, SECOND).cached_prompt_tokens, "served from the cache");
    assert!(widened.kv_cache_bytes() >= 256 * f32_model.info().kv_bytes_per_token);
}

/// A chat whose cache passed LongRoPE's original context (rotated by the
/// long factors) restores as such: the next turn is served from the cache
/// and equals the uninterrupted chat's.
#[test]
fn a_chat_past_the_longrope_switch_restores_with_its_factors() {
    let path = common::model_file("phi4-like", &common::synthetic::Phi3Spec::phi4_like());
    let model = LanguageModel::load(common::config(&path)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("long.phichat");
    let session = model.new_session(system());
    let first = session.send(FIRST.into(), GenerationParams::greedy(40), Collect::new(), None).unwrap();
    assert!(first.prompt_tokens as usize + first.token_ids.len() > 48, "turn 1 passes the original context");
    session.save(file.display().to_string()).unwrap();
    let want = session.send(SECOND.into(), GenerationParams::greedy(16), Collect::new(), None).unwrap();

    let restored = model.restore_session(file.display().to_string()).unwrap();
    let got = restored.send(SECOND.into(), GenerationParams::greedy(16), Collect::new(), None).unwrap();
    assert_eq!(got.token_ids, want.token_ids);
    assert_eq!(got.cached_prompt_tokens, want.cached_prompt_tokens);
    // The prefix both turns share comes from the restored cache (a cache
    // restored as short-rotated would serve none of a long turn).
    assert!(got.cached_prompt_tokens > 0, "served from the restored cache");
    assert!(got.prompt_tokens > 48, "turn 2 runs on the long factors");
}
