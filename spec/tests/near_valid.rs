//! Near-valid specs: every model in `models/`, in both languages, with one thing changed — a
//! number made 0, negative, huge, a float or a string, a kind or key renamed, a key removed or
//! duplicated, a layer dropped or repeated. The YAML form is mutated on its parsed tree, the DSL
//! form on its tokens. Whatever comes out, the front-end must not panic and must either accept
//! the spec or explain why with diagnostics whose spans lie inside the text and that render.

use std::fmt;
use std::path::PathBuf;
use std::sync::LazyLock;

use cnnc_spec::{Diagnostic, Format, JsonDiagnostic, Source};
use proptest::prelude::*;
use proptest::sample::Index;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Words a hand-edited spec plausibly has in the wrong place: kinds, argument names, typos.
const WORDS: &[&str] = &[
    "conv2d",
    "maxpool2d",
    "avgpool2d",
    "linear",
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "flatten",
    "dropout",
    "batchnorm2d",
    "conv",
    "Linear",
    "dense",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "in_channels",
    "out_channels",
    "in_features",
    "out_features",
    "num_features",
    "bias",
    "ceil_mode",
    "p",
    "eps",
    "momentum",
    "negative_slope",
    "name",
    "model",
    "input",
    "layers",
    "same",
    "layer1.0",
    "fc1",
    "1st",
    "é",
    "",
];

/// Values that replace a number or a word: zero, negative, huge (beyond i64, beyond the size
/// limits), floats, strings, and the other value types.
const VALUES: &[&str] = &[
    "0",
    "-1",
    "-32",
    "1048577",
    "4294967297",
    "9223372036854775807",
    "99999999999999999999",
    "2.5",
    "-0.0",
    "1e400",
    "1e-5",
    "1e-50",
    "1e300",
    "true",
    "false",
    "null",
    "x",
    "\"32\"",
];

fn models(extension: &str) -> Vec<Source> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 5,
        "expected every model in {}",
        dir.display()
    );
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).expect("readable model");
            let format = Format::from_path(path).expect("spec extension");
            let source = Source::new(path.display().to_string(), text, format);
            assert!(
                cnnc_spec::compile(&source).is_ok(),
                "{} is not valid",
                path.display()
            );
            source
        })
        .collect()
}

/// Parses and checks `text`: it is accepted, or rejected with at least one error, and every
/// diagnostic points inside the text, renders, and is not the checker's report of its own bug.
fn exercise(text: &str, format: Format) {
    let source = Source::new("mutated", text, format);
    let diagnostics = match cnnc_spec::parse(&source) {
        Ok(model) => cnnc_spec::check(&model).diagnostics,
        Err(diagnostics) => {
            assert!(
                diagnostics.iter().any(Diagnostic::is_error),
                "rejected without an error:\n{text}"
            );
            diagnostics
        }
    };
    for diagnostic in &diagnostics {
        // Everything the checked constructor refuses, the checker reports first.
        assert!(
            !diagnostic.message.starts_with("cnnc bug"),
            "{}\n{text}",
            diagnostic.message
        );
        let spans =
            std::iter::once(diagnostic.span).chain(diagnostic.secondary.iter().map(|l| l.span));
        for span in spans {
            let range = span.range();
            assert!(
                range.start <= range.end
                    && range.end <= text.len()
                    && text.is_char_boundary(range.start)
                    && text.is_char_boundary(range.end),
                "{} points at {range:?}, outside the {}-byte text:\n{text}",
                diagnostic.code.as_str(),
                text.len()
            );
        }
        let rendered = cnnc_spec::render(diagnostic, &source, false);
        assert!(
            rendered.contains(diagnostic.code.as_str()) && rendered.contains("mutated"),
            "rendering lost the code or file:\n{rendered}"
        );
        serde_json::to_string(&JsonDiagnostic::new(diagnostic, &source))
            .expect("a diagnostic serialises to JSON");
    }
}

// ---------------------------------------------------------------------------------------------
// YAML: an ordered tree of the document, mutated and written back in flow style.

/// A YAML document as written: mappings keep their order (and, once mutated, duplicates).
#[derive(Clone, Debug)]
enum Tree {
    /// A scalar, already in YAML syntax.
    Scalar(String),
    Seq(Vec<Tree>),
    Map(Vec<(Tree, Tree)>),
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Tree, E> {
        Ok(Tree::Scalar("null".into()))
    }

    fn visit_none<E>(self) -> Result<Tree, E> {
        Ok(Tree::Scalar("null".into()))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
        Tree::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Tree, E> {
        Ok(Tree::Scalar(v.to_string()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Tree, E> {
        Ok(Tree::Scalar(v.to_string()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Tree, E> {
        Ok(Tree::Scalar(v.to_string()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Tree, E> {
        Ok(Tree::Scalar(format!("{v:?}")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Tree, E> {
        Ok(Tree::Scalar(word(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Tree::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Tree::Map(entries))
    }
}

/// `s` as a YAML scalar: plain when it reads back as the same string, else double-quoted. An
/// arithmetic argument (`bn_size * growth_rate`, `(kernel_size - 1) // 2`) stays plain: only
/// plain scalars are arithmetic.
fn word(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '(')
        && !s.ends_with(' ')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_. +-*/%()".contains(c))
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        s.to_owned()
    } else {
        serde_json::to_string(s).expect("a string serialises")
    }
}

impl fmt::Display for Tree {
    /// Flow style, except the top-level mapping and its sequences, written in block style like
    /// the models are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn flow(tree: &Tree, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match tree {
                Tree::Scalar(s) => f.write_str(s),
                Tree::Seq(items) => {
                    f.write_str("[")?;
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            f.write_str(", ")?;
                        }
                        flow(item, f)?;
                    }
                    f.write_str("]")
                }
                Tree::Map(entries) => {
                    f.write_str("{")?;
                    for (i, (key, value)) in entries.iter().enumerate() {
                        if i > 0 {
                            f.write_str(", ")?;
                        }
                        flow(key, f)?;
                        f.write_str(": ")?;
                        flow(value, f)?;
                    }
                    f.write_str("}")
                }
            }
        }
        let Tree::Map(entries) = self else {
            return flow(self, f);
        };
        for (key, value) in entries {
            flow(key, f)?;
            match value {
                Tree::Seq(items) if !items.is_empty() => {
                    f.write_str(":\n")?;
                    for item in items {
                        f.write_str("  - ")?;
                        flow(item, f)?;
                        f.write_str("\n")?;
                    }
                }
                _ => {
                    f.write_str(": ")?;
                    flow(value, f)?;
                    f.write_str("\n")?;
                }
            }
        }
        Ok(())
    }
}

/// One step from a node to a child.
#[derive(Clone, Copy, Debug)]
enum Step {
    Item(usize),
    Key(usize),
    Value(usize),
}

/// Every node's path, parents before children.
fn paths(tree: &Tree, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(prefix.clone());
    match tree {
        Tree::Scalar(_) => {}
        Tree::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                prefix.push(Step::Item(i));
                paths(item, prefix, out);
                prefix.pop();
            }
        }
        Tree::Map(entries) => {
            for (i, (key, value)) in entries.iter().enumerate() {
                for (step, child) in [(Step::Key(i), key), (Step::Value(i), value)] {
                    prefix.push(step);
                    paths(child, prefix, out);
                    prefix.pop();
                }
            }
        }
    }
}

fn node<'a>(tree: &'a Tree, path: &[Step]) -> &'a Tree {
    let Some((step, rest)) = path.split_first() else {
        return tree;
    };
    let child = match (tree, *step) {
        (Tree::Seq(items), Step::Item(i)) => &items[i],
        (Tree::Map(entries), Step::Key(i)) => &entries[i].0,
        (Tree::Map(entries), Step::Value(i)) => &entries[i].1,
        (tree, step) => unreachable!("path step {step:?} does not fit {tree:?}"),
    };
    node(child, rest)
}

fn node_mut<'a>(tree: &'a mut Tree, path: &[Step]) -> &'a mut Tree {
    let Some((step, rest)) = path.split_first() else {
        return tree;
    };
    let child = match (tree, *step) {
        (Tree::Seq(items), Step::Item(i)) => &mut items[i],
        (Tree::Map(entries), Step::Key(i)) => &mut entries[i].0,
        (Tree::Map(entries), Step::Value(i)) => &mut entries[i].1,
        (tree, step) => unreachable!("path step {step:?} does not fit {tree:?}"),
    };
    node_mut(child, rest)
}

/// How one YAML document is changed.
#[derive(Clone, Debug)]
enum TreeEdit {
    /// A scalar (a value, a key or a kind) becomes another value or word.
    Replace(Index, String),
    /// A mapping entry (a top-level key, an argument, a layer's kind) is removed.
    RemoveEntry(Index),
    /// A mapping entry is written twice.
    DuplicateEntry(Index),
    /// A list item (a layer, an input size) is removed.
    RemoveItem(Index),
    /// A list item is written twice in a row.
    RepeatItem(Index),
    /// A scalar becomes a list or a mapping.
    Nest(Index, bool),
}

fn replacement() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(VALUES).prop_map(str::to_owned),
        prop::sample::select(WORDS).prop_map(word),
    ]
}

fn tree_edit() -> impl Strategy<Value = TreeEdit> {
    prop_oneof![
        4 => (any::<Index>(), replacement()).prop_map(|(i, s)| TreeEdit::Replace(i, s)),
        1 => any::<Index>().prop_map(TreeEdit::RemoveEntry),
        1 => any::<Index>().prop_map(TreeEdit::DuplicateEntry),
        1 => any::<Index>().prop_map(TreeEdit::RemoveItem),
        1 => any::<Index>().prop_map(TreeEdit::RepeatItem),
        1 => (any::<Index>(), any::<bool>()).prop_map(|(i, m)| TreeEdit::Nest(i, m)),
    ]
}

/// Applies `edit` to `tree`, at the chosen node among those it applies to.
fn apply(tree: &mut Tree, edit: &TreeEdit) {
    let mut all = Vec::new();
    paths(tree, &mut Vec::new(), &mut all);
    let pick = |index: &Index, wanted: fn(&Tree) -> bool| {
        let fits: Vec<&Vec<Step>> = all.iter().filter(|p| wanted(node(tree, p))).collect();
        (!fits.is_empty()).then(|| fits[index.index(fits.len())].clone())
    };
    let scalar = |t: &Tree| matches!(t, Tree::Scalar(_));
    let map = |t: &Tree| matches!(t, Tree::Map(e) if !e.is_empty());
    let seq = |t: &Tree| matches!(t, Tree::Seq(i) if !i.is_empty());
    match edit {
        TreeEdit::Replace(index, value) => {
            if let Some(path) = pick(index, scalar) {
                *node_mut(tree, &path) = Tree::Scalar(value.clone());
            }
        }
        TreeEdit::Nest(index, as_map) => {
            if let Some(path) = pick(index, scalar) {
                let target = node_mut(tree, &path);
                let inner = target.clone();
                *target = if *as_map {
                    Tree::Map(vec![(inner, Tree::Scalar("1".into()))])
                } else {
                    Tree::Seq(vec![inner.clone(), inner])
                };
            }
        }
        TreeEdit::RemoveEntry(index) | TreeEdit::DuplicateEntry(index) => {
            if let Some(path) = pick(index, map)
                && let Tree::Map(entries) = node_mut(tree, &path)
            {
                let at = index.index(entries.len());
                if matches!(edit, TreeEdit::RemoveEntry(_)) {
                    entries.remove(at);
                } else {
                    entries.insert(at, entries[at].clone());
                }
            }
        }
        TreeEdit::RemoveItem(index) | TreeEdit::RepeatItem(index) => {
            if let Some(path) = pick(index, seq)
                && let Tree::Seq(items) = node_mut(tree, &path)
            {
                let at = index.index(items.len());
                if matches!(edit, TreeEdit::RemoveItem(_)) {
                    items.remove(at);
                } else {
                    items.insert(at, items[at].clone());
                }
            }
        }
    }
}

/// The YAML models as trees, read once.
static YAML_TREES: LazyLock<Vec<Tree>> = LazyLock::new(|| {
    models("yaml")
        .iter()
        .map(|source| {
            let tree: Tree = serde_saphyr::from_str(source.text()).expect("a model is valid YAML");
            // The tree written back is itself a valid spec, so each mutation is the only change.
            let text = tree.to_string();
            let again = Source::new(source.name(), text.as_str(), Format::Yaml);
            assert!(
                cnnc_spec::compile(&again).is_ok(),
                "{} written back is not valid:\n{text}",
                source.name()
            );
            tree
        })
        .collect()
});

/// The DSL models, read once.
static DSL_MODELS: LazyLock<Vec<Source>> = LazyLock::new(|| models("cnn"));

// ---------------------------------------------------------------------------------------------
// DSL: tokens, mutated and joined back.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Token {
    Space,
    Newline,
    Comment,
    Str,
    Number,
    Word,
    Punct,
}

/// Splits DSL text into tokens whose concatenation is the text.
fn tokenize(text: &str) -> Vec<(Token, String)> {
    let mut tokens = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let len = match c {
            '\n' => 1,
            ' ' | '\t' | '\r' => rest
                .find(|c| !matches!(c, ' ' | '\t' | '\r'))
                .unwrap_or(rest.len()),
            '#' => rest.find('\n').unwrap_or(rest.len()),
            '"' => rest[1..].find('"').map_or(rest.len(), |end| end + 2),
            '0'..='9' | '-' | '+' => {
                1 + rest[1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
                    .unwrap_or(rest.len() - 1)
            }
            c if c.is_alphabetic() || c == '_' => rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(rest.len()),
            c => c.len_utf8(),
        };
        let kind = match c {
            '\n' => Token::Newline,
            ' ' | '\t' | '\r' => Token::Space,
            '#' => Token::Comment,
            '"' => Token::Str,
            '0'..='9' | '-' | '+' => Token::Number,
            c if c.is_alphabetic() || c == '_' => Token::Word,
            _ => Token::Punct,
        };
        tokens.push((kind, rest[..len].to_owned()));
        rest = &rest[len..];
    }
    tokens
}

/// How one DSL text is changed.
#[derive(Clone, Debug)]
enum TokenEdit {
    /// A number becomes another value.
    Number(Index, &'static str),
    /// A word (a kind, a key, a name) becomes another.
    Word(Index, &'static str),
    /// A token other than space is removed.
    Remove(Index),
    /// A token other than space is written twice.
    Repeat(Index),
    /// A `key=value` argument is written twice.
    DuplicateArgument(Index),
    /// A line (a layer, `input`, `model`) is removed.
    DropLine(Index),
    /// A line is written twice.
    RepeatLine(Index),
}

fn token_edit() -> impl Strategy<Value = TokenEdit> {
    let value = prop::sample::select(VALUES);
    let word = prop::sample::select(WORDS);
    prop_oneof![
        3 => (any::<Index>(), value).prop_map(|(i, v)| TokenEdit::Number(i, v)),
        3 => (any::<Index>(), word).prop_map(|(i, w)| TokenEdit::Word(i, w)),
        1 => any::<Index>().prop_map(TokenEdit::Remove),
        1 => any::<Index>().prop_map(TokenEdit::Repeat),
        1 => any::<Index>().prop_map(TokenEdit::DuplicateArgument),
        1 => any::<Index>().prop_map(TokenEdit::DropLine),
        1 => any::<Index>().prop_map(TokenEdit::RepeatLine),
    ]
}

fn mutate_dsl(text: &str, edit: &TokenEdit) -> String {
    let mut tokens = tokenize(text);
    let positions = |tokens: &[(Token, String)], wanted: &dyn Fn(usize, Token) -> bool| {
        tokens
            .iter()
            .enumerate()
            .filter(|(i, (kind, _))| wanted(*i, *kind))
            .map(|(i, _)| i)
            .collect::<Vec<usize>>()
    };
    let chosen =
        |index: &Index, fits: Vec<usize>| (!fits.is_empty()).then(|| fits[index.index(fits.len())]);
    match edit {
        TokenEdit::Number(index, value) => {
            if let Some(at) = chosen(index, positions(&tokens, &|_, k| k == Token::Number)) {
                tokens[at].1 = (*value).to_owned();
            }
        }
        TokenEdit::Word(index, word) => {
            if let Some(at) = chosen(index, positions(&tokens, &|_, k| k == Token::Word)) {
                tokens[at].1 = (*word).to_owned();
            }
        }
        TokenEdit::Remove(index) | TokenEdit::Repeat(index) => {
            let fits = positions(&tokens, &|_, k| k != Token::Space);
            if let Some(at) = chosen(index, fits) {
                if matches!(edit, TokenEdit::Remove(_)) {
                    tokens.remove(at);
                } else {
                    tokens.insert(at, tokens[at].clone());
                }
            }
        }
        TokenEdit::DuplicateArgument(index) => {
            // `key=value`: a word, `=`, then one token.
            let is_argument = |i: usize, kind: Token| {
                kind == Token::Word
                    && tokens.get(i + 1).is_some_and(|(_, t)| t == "=")
                    && tokens.get(i + 2).is_some()
            };
            if let Some(at) = chosen(index, positions(&tokens, &is_argument)) {
                let copy: Vec<(Token, String)> = tokens[at..at + 3].to_vec();
                let after = at + 3;
                tokens.insert(after, (Token::Punct, ",".into()));
                tokens.insert(after + 1, (Token::Space, " ".into()));
                for (offset, token) in copy.into_iter().enumerate() {
                    tokens.insert(after + 2 + offset, token);
                }
            }
        }
        TokenEdit::DropLine(index) | TokenEdit::RepeatLine(index) => {
            let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
            if !lines.is_empty() {
                let at = index.index(lines.len());
                if matches!(edit, TokenEdit::DropLine(_)) {
                    lines.remove(at);
                } else {
                    lines.insert(at, lines[at].clone());
                }
            }
            return lines.concat();
        }
    }
    tokens.into_iter().map(|(_, t)| t).collect()
}

// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn yaml_with_one_field_changed(model in any::<Index>(), edit in tree_edit()) {
        let mut tree = YAML_TREES[model.index(YAML_TREES.len())].clone();
        apply(&mut tree, &edit);
        exercise(&tree.to_string(), Format::Yaml);
    }

    #[test]
    fn dsl_with_one_token_changed(model in any::<Index>(), edit in token_edit()) {
        let source = &DSL_MODELS[model.index(DSL_MODELS.len())];
        exercise(&mutate_dsl(source.text(), &edit), Format::Dsl);
    }
}

#[test]
fn dsl_tokens_join_back_to_the_text() {
    for source in DSL_MODELS.iter() {
        let tokens = tokenize(source.text());
        assert!(tokens.iter().any(|(kind, _)| *kind == Token::Number));
        let joined: String = tokens.into_iter().map(|(_, t)| t).collect();
        assert_eq!(joined, source.text());
    }
}
