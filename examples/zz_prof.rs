use phi_mobile::engine::{GenerateOptions, LoadConfig, LoadedModel, SamplingConfig, Sequence, Stop};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (path, threads, prompt, gen) =
        (&a[1], a[2].parse().unwrap(), a[3].parse::<usize>().unwrap(), a[4].parse().unwrap());
    let cfg = LoadConfig {
        model_path: path.into(),
        tokenizer_path: None,
        context_length: None,
        threads: Some(threads),
        parse_special_in_messages: false,
    };
    let model = LoadedModel::load(&cfg, &mut |_, _| {}).unwrap();
    let ids: Vec<u32> = (0..prompt).map(|i| 100 + (i as u32 * 7) % 1000).collect();
    let opts = GenerateOptions {
        sampling: SamplingConfig { temperature: 0.0, repeat_penalty: 1.0, ..SamplingConfig::default() },
        max_tokens: gen,
        stop: vec![],
    };
    let mut seq = Sequence::new(&model);
    let o = seq.generate(&model, &ids, &opts, Stop::NEVER, &mut |_| Ok(true)).unwrap();
    eprintln!(
        "prefill {:.1} decode {:.1} ({} tokens)",
        o.prefill_tokens_per_second(),
        o.decode_tokens_per_second(),
        o.token_ids.len()
    );
}
