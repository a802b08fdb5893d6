//! Decode allocates nothing per layer: the forward pass's buffers are sized
//! once per sequence (and grown with its KV cache, in steps of positions),
//! the kernels' scratch is per thread and reused. What a token still
//! allocates is its text's (the tokenizer's decoding and the piece: 21 per
//! token for SmolLM2; attention's scratch made it 831). Allocations are
//! counted rather than time measured, so the check is exact on a loaded
//! machine. One test only: the counts are process-wide.

mod common;

use phi_mobile::engine::{GenerateOptions, LoadConfig, LoadedModel, SamplingConfig, Sequence, Stop};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn a_decoded_token_allocates_less_than_once_per_layer() {
    let cfg = LoadConfig { model_path: common::smollm2_path(), threads: Some(2), ..LoadConfig::default() };
    let model = LoadedModel::load(&cfg, &mut |_, _| Ok(true)).unwrap();
    let layers = 30; // SmolLM2-135M's block count
    let prompt = model.text.encode("The history of ice hockey begins on frozen ponds").unwrap();
    // Greedy, to a fixed length: both runs decode the same tokens, all of
    // them inside the KV cache's first step of positions.
    let allocations = |tokens: usize| {
        let opts = GenerateOptions {
            sampling: SamplingConfig { temperature: 0.0, repeat_penalty: 1.0, ..SamplingConfig::default() },
            max_tokens: tokens,
            ..GenerateOptions::default()
        };
        let mut seq = Sequence::new(&model);
        let (out, n) =
            common::allocations(|| seq.generate(&model, &prompt, &opts, Stop::NEVER, &mut |_: &str| Ok(true)).unwrap());
        assert_eq!(out.token_ids.len(), tokens, "the answer ended early");
        n
    };
    // Warm: the per-thread buffers have grown to this model's sizes.
    allocations(8);
    let (short, long) = (allocations(8), allocations(40));
    let per_token = (long - short) / 32;
    assert!(per_token < layers, "{per_token} allocations per decoded token ({short} for 8 tokens, {long} for 40)");
}
