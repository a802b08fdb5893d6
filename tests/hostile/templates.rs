//! Hostile chat templates in the GGUF. Each runs in a child process (this
//! test binary re-executed under `prlimit --as`) on a 512 KiB thread, as an
//! iOS secondary thread: a stack overflow or an allocation failure aborts
//! the child, not the test run, and fails the case.

use std::process::Command;

use candle_core::quantized::gguf_file::Value;
use phi_mobile::*;

use super::common;
use super::common::synthetic::Phi3Spec;

const CHILD_CASE: &str = "PHI_MOBILE_HOSTILE_TEMPLATE";
/// Set to 1: the child reports an inference error by its reason.
const CHILD_REASONS: &str = "PHI_MOBILE_HOSTILE_REASONS";
/// Address space of a child: the test binary with a small model needs a few
/// hundred MB; the bombs asked for gigabytes.
const CHILD_ADDRESS_SPACE: u64 = 1 << 30;

fn msg(role: Role, content: &str) -> ChatMessage {
    ChatMessage::new(role, content)
}

/// Loads a Phi-3 with `template` and renders a two-turn chat, on a 512 KiB
/// thread; says what happened in one line.
fn load_and_render(template: String) -> String {
    let spec = Phi3Spec::reference().with_metadata("tokenizer.chat_template", Value::String(template));
    let path = common::model_file("hostile-template", &spec);
    let run = move || -> String {
        let model = match LanguageModel::load(common::config(&path)) {
            Ok(m) => m,
            Err(e) => return format!("load error {e:?}"),
        };
        let warned = model.info().chat_template_warning.is_some();
        let chat = vec![msg(Role::User, "Hi"), msg(Role::Assistant, "Hello"), msg(Role::User, "Bye")];
        let rendered = match model.format_chat(chat) {
            Ok(_) => "ok".to_string(),
            Err(LlmError::Inference { reason }) if std::env::var(CHILD_REASONS).is_ok_and(|v| v == "1") => reason,
            Err(LlmError::Inference { .. }) => "inference error".to_string(),
            Err(LlmError::ContextOverflow { .. }) => "context overflow".to_string(),
            Err(e) => format!("{e:?}"),
        };
        format!("warned={warned} render={rendered}")
    };
    std::thread::Builder::new().stack_size(512 << 10).spawn(run).unwrap().join().unwrap()
}

/// The child's side: does nothing unless started by [`in_child`].
#[test]
fn template_child() {
    let Ok(case) = std::env::var(CHILD_CASE) else { return };
    println!("RESULT {}", load_and_render(case));
}

fn in_child(template: &str) -> String {
    run_child(template, false)
}

fn run_child(template: &str, reasons: bool) -> String {
    let out = Command::new("prlimit")
        .arg(format!("--as={CHILD_ADDRESS_SPACE}"))
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "templates::template_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_CASE, template)
        .env("MALLOC_ARENA_MAX", "2")
        .env(CHILD_REASONS, if reasons { "1" } else { "" })
        .output()
        .expect("run prlimit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let short: String = template.chars().take(60).collect();
    assert!(
        out.status.success(),
        "{short}: the child died ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("{short}: {stdout}"))
        .to_string()
}

fn chain(open: &str, unit: &str, close: &str, n: usize) -> String {
    format!("{open}{}{close}", unit.repeat(n))
}

/// 2 000-operator chains aborted the process with a stack overflow inside
/// minijinja; now the template is refused at load and the Phi-3 model falls
/// back to its built-in format.
#[test]
fn deep_chains_are_refused_not_a_crash() {
    let n = 2000;
    let cases = [
        chain("{{ 'a'", " + 'a'", " }}", n),
        chain("{{ 'a'", " ~ 'a'", " }}", n),
        chain("{{ 'a'", "|e", " }}", n),
        chain("{{ messages", ".a", " }}", n),
        chain("{{ ", "not ", "true }}", n),
        format!("{{{{ {}1{} }}}}", "(".repeat(n), ")".repeat(n)),
        format!("{}x{}", "{% if true %}".repeat(n), "{% endif %}".repeat(n)),
        chain("{% if false %}", "{% elif false %}", "{% endif %}", n),
        chain("{{ ", "[", "", n),
    ];
    for t in &cases {
        assert_eq!(in_child(t), "warned=true render=ok", "{}", &t[..40]);
    }
}

/// Just inside the limits: the scan admits them, and they compile and
/// render on the template thread, whatever the caller's stack.
#[test]
fn deepest_allowed_templates_render() {
    let ops = 190; // 2 tokens each, under the 400-token tag limit
    let cases = [
        chain("{{ 'a'", " + 'a'", " }}", ops),
        chain("{{ 'a'", "|e", " }}", ops),
        chain("{{ 'a'", "[0]", " }}", 130),
        format!("{}x{}", "{% if true %}".repeat(40), "{% endif %}".repeat(40)),
        chain("{% if false %}", "{% elif false %}", "{% else %}x{% endif %}", 39),
        format!("{{{{ {}1{} }}}}", "(".repeat(24), ")".repeat(24)),
    ];
    for t in &cases {
        assert_eq!(in_child(t), "warned=false render=ok", "{}", &t[..40]);
    }
}

/// Filters and operators that allocate by a parameter: refused at load when
/// the probe chat triggers them, a typed error when only a longer chat does.
#[test]
fn allocation_bombs_are_bounded() {
    let refused_at_load = [
        "{{ messages | tojson(indent=100000000) }}",
        "{{ '{:>2000000000}'.format('x') }}",
        "{{ '{:>{}}'.format('x', 2000000000) }}",
        "{{ messages | pprint }}",
        "{{ 'ab ' * 20000000 }}",
        "{{ [1, 2, 3] * 30000000 }}",
        "{% for m in messages %}{{ m.content * 2 }}{% endfor %}",
        "{% set l = range(100000) | list %}{% set l = l * 16 %}{% set l = l * 16 %}{{ l | tojson }}",
        "{% set l = range(100000) | list %}{% set l = l * 16 %}{% set l = l * 16 %}{{ l | string }}",
        "{% set l = range(100000) | list %}{% set l = l * 16 %}{% set l = l * 16 %}{{ l }}",
        "{% set l = range(100000) | list %}{% set l = l * 16 %}{% set l = l * 16 %}{{ l | join(',') }}",
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "{{ 'x' | indent(1000000000, true) }}",
        "{{ '%2000000000s' | format('x') }}",
    ];
    for t in refused_at_load {
        assert_eq!(in_child(t), "warned=true render=ok", "{t}");
    }
    let on_a_longer_chat = [
        "{% if messages | length > 1 %}{{ messages | tojson(indent=100000000) }}{% endif %}x",
        "{% if messages | length > 1 %}{{ 'x' | indent(1000000000, true) }}{% endif %}x",
        "{% if messages | length > 1 %}{% for i in range(100000) %}{{ 'xxxxxxxxxxxxxxxx' }}{% endfor %}{% endif %}x",
    ];
    for t in on_a_longer_chat {
        let r = in_child(t);
        assert!(r == "warned=false render=inference error" || r == "warned=false render=context overflow", "{t}: {r}");
    }
}

/// Values that share their items grow faster than the fuel counts: a list
/// doubled by `+`, `chain`, nested literals or a recursive macro, then
/// formatted. Our minijinja patch charges every formatted value to a budget
/// per render, and the slots of a flattened sequence too.
#[test]
fn shared_values_cannot_grow_past_the_format_budget() {
    let bombs = [
        "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l ~ '' }}",
        &format!("{{% set l = ['ab'] %}}{}{{{{ l | length }}}}", "{% set l = l + l %}".repeat(40)),
        "{% set ns = namespace(l=['ab']) %}{% for i in range(40) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l | upper }}",
        "{% set ns = namespace(d={}) %}{% for i in range(40) %}{% set ns.d = {'a': ns.d, 'b': ns.d} %}{% endfor %}{{ ns.d ~ '' }}",
        "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l | chain(ns.l) %}{% endfor %}{{ ns.l | join(',') }}",
        "{% macro d(l, n) %}{% if n > 0 %}{{ d(l + l, n - 1) }}{% else %}{{ l | join(',') }}{% endif %}{% endmacro %}{{ d([1], 40) }}",
        "{% set ns = namespace(l=['ab']) %}{% for i in range(40) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ raise_exception(ns.l) }}",
        "{% set ns = namespace(l=['ab']) %}{% for i in range(40) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ' '.join(ns.l) }}",
    ];
    for t in bombs {
        assert_eq!(in_child(t), "warned=true render=ok", "{t}");
        let later = format!("{{% if messages | length > 1 %}}{t}{{% endif %}}x");
        assert_eq!(in_child(&later), "warned=false render=inference error", "{t}");
    }
}

/// `l = l + [x]` in a loop builds a chain of lazy views; minijinja flattens
/// it every 32 links, so iterating or dropping it does not recurse once per
/// link, and the copies are charged to the budget: 2 000 items render, and
/// 50 000 are refused (a quadratic number of copied slots), not a crash.
#[test]
fn a_list_grown_item_by_item_is_bounded_not_a_stack_overflow() {
    let grow = |n: usize| {
        format!("{{% set ns = namespace(l=[]) %}}{{% for i in range({n}) %}}{{% set ns.l = ns.l + [i] %}}{{% endfor %}}{{{{ ns.l | length }}}}")
    };
    assert_eq!(in_child(&grow(2000)), "warned=false render=ok");
    assert_eq!(in_child(&grow(50000)), "warned=true render=ok");
}

/// A value wrapped once per loop iteration (a list, a namespace, `chain`,
/// a slice) nests 10 000–20 000 deep. Formatting, comparing, iterating or dropping
/// it recursed once per level and overflowed the stack; our minijinja patch
/// stops those at 400 levels and drops iteratively.
#[test]
fn deeply_nested_values_are_an_error_not_a_stack_overflow() {
    const TOO_DEEP: &str = "the chat template nests values too deeply";
    // Each overflowed an 8 MiB stack at 10 000 levels or fewer before the patch.
    let cases = [
        (20000, "{% set ns.l = [ns.l] %}", "{{ ns.l | length }}", "ok"),
        (20000, "{% set ns.l = [ns.l] %}", "{{ ns.l ~ '' }}", TOO_DEEP),
        (20000, "{% set ns.l = [ns.l] %}{% set ns.m = [ns.m] %}", "{{ ns.l == ns.m }}", TOO_DEEP),
        (
            20000,
            "{% set ns.l = [ns.l] %}{% set ns.m = [ns.m] %}",
            "{{ [ns.l, ns.m] | unique | list | length }}",
            TOO_DEEP,
        ),
        (20000, "{% set n = namespace(p=ns.c) %}{% set ns.c = n %}", "{{ 1 }}", "ok"),
        (20000, "{% set ns.d = ns.d | chain({}) %}", "{{ ns.d | length }}", "ok"),
        (20000, "{% set ns.l = ns.l | chain(range(1)) %}", "{{ ns.l | list | length }}", TOO_DEEP),
        // Each slice asks the one below for its length: quadratic, to 400 levels.
        (10000, "{% set ns.l = messages[0:] if loop.first else ns.l[0:] %}", "{{ ns.l | list | length }}", TOO_DEEP),
    ];
    for (n, step, use_it, expected) in cases {
        let t = format!(
            "{{% if messages | length > 1 %}}{{% set ns = namespace(l=[], m=[], d={{}}, c=none) %}}\
             {{% for i in range({n}) %}}{step}{{% endfor %}}{use_it}{{% endif %}}x"
        );
        assert_eq!(run_child(&t, true), format!("warned=false render={expected}"), "{step} {use_it}");
    }
}

/// A Llama-family model has no built-in format: a refused template makes
/// the model invalid, with the reason.
#[test]
fn a_refused_template_without_a_builtin_format_is_an_invalid_model() {
    let deep = chain("{{ 'a'", " + 'a'", " }}", 2000);
    let spec = Phi3Spec::llama().with_metadata("tokenizer.chat_template", Value::String(deep));
    match LanguageModel::load(common::config(&common::model_file("llama-deep-template", &spec))) {
        Err(LlmError::InvalidModel { reason }) => assert!(reason.contains("tokens"), "{reason}"),
        other => panic!("{:?}", other.map(|m| m.info())),
    }
    for (name, bad) in [("broken", "{% for %}"), ("raising", "{{ raise_exception('no') }}")] {
        let spec = Phi3Spec::reference().with_metadata("tokenizer.chat_template", Value::String(bad.into()));
        let model = LanguageModel::load(common::config(&common::model_file(name, &spec))).unwrap();
        let warning = model.info().chat_template_warning.unwrap_or_default();
        assert!(warning.contains("built-in format"), "{name}: {warning}");
        let m = vec![msg(Role::User, "Hi")];
        assert_eq!(model.format_chat(m.clone()).unwrap(), common::reference_model().format_chat(m).unwrap());
    }
}
