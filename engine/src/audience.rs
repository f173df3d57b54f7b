//! The audience expression language: a string that names a set of users by
//! their tags, e.g. `gender=f AND city IN (beijing, shanghai) AND purchase
//! DURING LAST 30 DAYS AND NOT opted_out`.
//!
//! ```text
//! expr     := and ( OR and )*
//! and      := unary ( AND unary )*
//! unary    := NOT unary | primary
//! primary  := '(' expr ')' | term [ DURING window ]
//! term     := name                                  a tag or segment
//!           | name '=' value                       a column tag
//!           | name IN '(' value ( ',' value )* ')'
//!           | name ( '<' | '<=' | '>' | '>=' ) number
//!           | name BETWEEN value AND value
//! window   := LAST integer ( DAY | DAYS )
//!           | BETWEEN value AND value               dates, inclusive
//! name     := word | "double quoted"
//! value    := word | 'single quoted' | number
//! ```
//!
//! Keywords are case-insensitive; a word is letters, digits, `_`, `-`, `.`,
//! `:` and `@` (so `city=xi'an` needs quotes: `city='xi''an'`, doubled quote
//! inside). `!=` and `<>` are refused with a hint: `NOT city=x` is what they
//! would mean, and it includes users with no city. [`parse`] reports the 1-based character position of an error and
//! what was expected there. [`evaluate`] and [`count`] compute an expression
//! over any [`TagSource`] one container key (2^16 users) at a time, reading
//! each operand container where it lies ([`crate::frozen`]), ordering each
//! AND chain by cardinality and counting without building the set.

use std::borrow::Cow;
use std::fmt;

use roaring::RoaringBitmap;

use crate::error::{Error, Result};
use crate::frozen::{Block, Container, Frozen};

/// A parsed audience expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Audience {
    /// One term: a tag or segment, a column value, a range...
    Term(Term),
    /// Users with `term` in the time window (behaviour tags).
    During(Term, Window),
    Not(Box<Audience>),
    And(Vec<Audience>),
    Or(Vec<Audience>),
}

/// The leaves of an expression: what a [`TagSource`] answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// A tag or segment by name.
    Tag(String),
    /// `column=value`: the users with that value.
    Equals { column: String, value: Value },
    /// `column IN (...)`.
    In { column: String, values: Vec<Value> },
    /// `column < n` and friends on a numeric attribute.
    Compare {
        column: String,
        op: CompareOp,
        value: Value,
    },
    /// `column BETWEEN low AND high`, inclusive.
    Between {
        column: String,
        low: Value,
        high: Value,
    },
}

/// A literal as written: quoted text, or a bare word or number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value(pub String);

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Lt,
    LtEq,
    Gt,
    GtEq,
}

/// When behaviour happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Window {
    /// The last `n` days, today included.
    LastDays(u32),
    /// From `start` to `end`, both days included (as written, ISO dates).
    Between { start: Value, end: Value },
}

/// The sets whose union is a term's users (or every user): borrowed where
/// the source keeps them.
pub type Sets<'a> = Vec<Cow<'a, Frozen>>;

/// Where the sets of users behind terms come from (the tag store; a test
/// model in tests).
pub trait TagSource {
    /// Every user there is (what NOT is relative to), as a union of sets.
    fn universe(&self) -> Result<Sets<'_>>;
    /// The users of a term, in a window when given, as a union of sets.
    fn term(&self, term: &Term, window: Option<&Window>) -> Result<Sets<'_>>;
    /// How many users a term has; the default counts the union of its sets.
    fn term_len(&self, term: &Term, window: Option<&Window>) -> Result<u64> {
        let sets = self.term(term, window)?;
        Ok(match sets.as_slice() {
            [one] => one.len(),
            _ => union_len(sets),
        })
    }
}

/// How many users the union of `sets` has.
pub fn union_len(sets: Sets<'_>) -> u64 {
    count_of(&Node::Sets(sets))
}

/// The users of `audience`.
pub fn evaluate(audience: &Audience, source: &dyn TagSource) -> Result<RoaringBitmap> {
    let mut users = RoaringBitmap::new();
    evaluate_blocks(audience, source, |key, block| {
        block.append_to(key, &mut users)
    })?;
    Ok(users)
}

/// The users of `audience`, ascending, without building a bitmap (for
/// listing them).
pub fn ordinals(audience: &Audience, source: &dyn TagSource) -> Result<Vec<u32>> {
    let (mut users, mut values) = (Vec::new(), Vec::new());
    evaluate_blocks(audience, source, |key, block| {
        let base = u32::from(key) << 16;
        block.values_into(&mut values);
        users.extend(values.iter().map(|&v| base | u32::from(v)));
    })?;
    Ok(users)
}

/// Evaluates `audience` key by key, handing `each` every key's users where
/// it has any, keys ascending.
pub fn evaluate_blocks(
    audience: &Audience,
    source: &dyn TagSource,
    mut each: impl FnMut(u16, &Block),
) -> Result<()> {
    let root = resolve(audience, source)?.0;
    let mut blocks = Blocks::default();
    let mut block = Block::default();
    for key in root.all_keys() {
        blocks.eval(&root, key, &mut block);
        if !block.is_empty() {
            each(key, &block);
        }
    }
    Ok(())
}

/// How many users `audience` has, counted key by key without building the
/// set; a single term's count comes from the source.
pub fn count(audience: &Audience, source: &dyn TagSource) -> Result<u64> {
    match audience {
        Audience::Term(term) => source.term_len(term, None),
        Audience::During(term, window) => source.term_len(term, Some(window)),
        _ => Ok(count_of(&resolve(audience, source)?.0)),
    }
}

/// How many users `root` has, key by key.
fn count_of(root: &Node<'_>) -> u64 {
    let mut blocks = Blocks::default();
    let mut block = Block::default();
    let keys = root.all_keys().into_iter();
    keys.map(|key| blocks.count(root, key, &mut block)).sum()
}

/// An expression with its terms resolved to sets, evaluated one container
/// key (2^16 users) at a time: each node's result for a key is a [`Block`]
/// that stays in cache, and each operand container is read once where it
/// lies, instead of a whole bitmap being built for every step.
enum Node<'a> {
    /// The union of these sets.
    Sets(Sets<'a>),
    /// The users in every positive part (smallest first, at least one) and
    /// in none of the negated parts.
    And {
        positive: Vec<Node<'a>>,
        negated: Vec<Node<'a>>,
    },
    Or(Vec<Node<'a>>),
}

impl Node<'_> {
    /// Every key the node's users can have, ascending.
    fn all_keys(&self) -> Vec<u16> {
        let mut keys = Vec::new();
        self.keys(&mut keys);
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Every key the node's users can have (with repeats).
    fn keys(&self, out: &mut Vec<u16>) {
        match self {
            Node::Sets(sets) => sets.iter().for_each(|s| out.extend(s.keys())),
            // The smallest positive part's keys: none outside them qualify.
            Node::And { positive, .. } => positive[0].keys(out),
            Node::Or(parts) => parts.iter().for_each(|p| p.keys(out)),
        }
    }
}

/// Resolves `audience` to a node and a cheap upper bound of its size (exact
/// for a set, the sum for a union, the smallest part for AND), which orders
/// AND chains.
fn resolve<'a>(audience: &Audience, source: &'a dyn TagSource) -> Result<(Node<'a>, u64)> {
    let sets = |sets: Sets<'a>| {
        let size = sets.iter().map(|s| s.len()).sum();
        (Node::Sets(sets), size)
    };
    Ok(match audience {
        Audience::Term(term) => sets(source.term(term, None)?),
        Audience::During(term, window) => sets(source.term(term, Some(window))?),
        Audience::Not(inner) => {
            let (universe, size) = sets(source.universe()?);
            let node = Node::And {
                positive: vec![universe],
                negated: vec![resolve(inner, source)?.0],
            };
            (node, size)
        }
        Audience::And(parts) => {
            let mut positive = Vec::new();
            let mut negated = Vec::new();
            for part in parts {
                match part {
                    Audience::Not(inner) => negated.push(resolve(inner, source)?.0),
                    _ => positive.push(resolve(part, source)?),
                }
            }
            if positive.is_empty() {
                positive.push(sets(source.universe()?));
            }
            positive.sort_by_key(|(_, size)| *size);
            let size = positive[0].1;
            let positive = positive.into_iter().map(|(node, _)| node).collect();
            (Node::And { positive, negated }, size)
        }
        Audience::Or(parts) => {
            let mut size = 0u64;
            let mut nodes = Vec::new();
            for part in parts {
                let (node, part_size) = resolve(part, source)?;
                size = size.saturating_add(part_size);
                nodes.push(node);
            }
            (Node::Or(nodes), size)
        }
    })
}

/// Evaluates nodes key by key, with spare blocks for the parts of a node
/// that are not plain sets.
#[derive(Default)]
struct Blocks {
    spare: Vec<Block>,
}

impl Blocks {
    /// `node`'s users of `key` into `out`.
    fn eval(&mut self, node: &Node<'_>, key: u16, out: &mut Block) {
        match node {
            Node::Sets(sets) => {
                out.clear();
                let mut containers = sets.iter().filter_map(|s| s.container(key));
                if let Some(first) = containers.next() {
                    out.set(first);
                }
                containers.for_each(|c| out.or(c));
            }
            Node::And { positive, negated } => self.eval_and(positive, negated, key, out),
            Node::Or(parts) => {
                self.eval(&parts[0], key, out);
                for part in &parts[1..] {
                    self.or(part, key, out);
                }
            }
        }
    }

    /// The users of `key` in every `positive` node (at least one) and in no
    /// `negated` one.
    fn eval_and(&mut self, positive: &[Node<'_>], negated: &[Node<'_>], key: u16, out: &mut Block) {
        self.eval(&positive[0], key, out);
        for part in &positive[1..] {
            if out.is_empty() {
                return;
            }
            self.and(part, key, out);
        }
        for part in negated {
            if out.is_empty() {
                return;
            }
            self.and_not(part, key, out);
        }
    }

    /// How many users of `key` `node` has. The last step of an AND, when
    /// it is one set, is counted without being applied.
    fn count(&mut self, node: &Node<'_>, key: u16, out: &mut Block) -> u64 {
        let Node::And { positive, negated } = node else {
            self.eval(node, key, out);
            return out.len();
        };
        fn single<'n>(node: &'n Node<'_>, key: u16) -> Option<Option<Container<'n>>> {
            match node {
                Node::Sets(sets) if sets.len() == 1 => Some(sets[0].container(key)),
                _ => None,
            }
        }
        let (last, is_negated) = match (negated.last(), positive.len()) {
            (Some(last), _) => (last, true),
            (None, 1) => {
                self.eval(node, key, out);
                return out.len();
            }
            (None, _) => (&positive[positive.len() - 1], false),
        };
        let Some(container) = single(last, key) else {
            self.eval(node, key, out);
            return out.len();
        };
        let positive = &positive[..positive.len() - usize::from(!is_negated)];
        let negated = &negated[..negated.len() - usize::from(is_negated)];
        // One set and another: counted where both lie, no block built.
        if let ([rest], []) = (positive, negated)
            && let Some(first) = single(rest, key)
        {
            let Some(first) = first else { return 0 };
            let found = container.map_or(Some(0), |c| first.and_len(c));
            if let Some(found) = found {
                return if is_negated {
                    first.cardinality() - found
                } else {
                    found
                };
            }
        }
        self.eval_and(positive, negated, key, out);
        let mut spare = self.spare.pop().unwrap_or_default();
        let found = container.map_or(0, |c| out.and_len(c, &mut spare));
        self.spare.push(spare);
        if is_negated { out.len() - found } else { found }
    }

    fn and(&mut self, node: &Node<'_>, key: u16, out: &mut Block) {
        let mut spare = self.spare.pop().unwrap_or_default();
        match node {
            Node::Sets(sets) if sets.len() == 1 => match sets[0].container(key) {
                Some(c) => out.and(c, &mut spare),
                None => out.clear(),
            },
            _ => {
                self.eval(node, key, &mut spare);
                out.and_block(&spare);
            }
        }
        self.spare.push(spare);
    }

    fn and_not(&mut self, node: &Node<'_>, key: u16, out: &mut Block) {
        let mut spare = self.spare.pop().unwrap_or_default();
        match node {
            // Less a union is less each of its sets.
            Node::Sets(sets) => {
                for c in sets.iter().filter_map(|s| s.container(key)) {
                    out.and_not(c, &mut spare);
                }
            }
            _ => {
                self.eval(node, key, &mut spare);
                out.and_not_block(&spare);
            }
        }
        self.spare.push(spare);
    }

    fn or(&mut self, node: &Node<'_>, key: u16, out: &mut Block) {
        match node {
            Node::Sets(sets) => sets
                .iter()
                .filter_map(|s| s.container(key))
                .for_each(|c| out.or(c)),
            _ => {
                let mut spare = self.spare.pop().unwrap_or_default();
                self.eval(node, key, &mut spare);
                out.or_block(&spare);
                self.spare.push(spare);
            }
        }
    }
}

/// Parses an audience expression.
pub fn parse(text: &str) -> Result<Audience> {
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens,
        at: 0,
        text_chars: text.chars().count(),
    };
    let audience = parser.or()?;
    match parser.peek() {
        None => Ok(audience),
        Some(token) => Err(syntax(
            token.position,
            format!(
                "expected AND, OR or the end of the expression, found {}",
                token.kind
            ),
        )),
    }
}

fn syntax(position: usize, message: String) -> Error {
    Error::InvalidAudience { position, message }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// A bare word (keywords are words too).
    Word(String),
    /// `'text'`.
    Quoted(String),
    /// `"name"`.
    QuotedName(String),
    Symbol(&'static str),
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Word(w) => write!(f, "{w:?}"),
            Kind::Quoted(q) => write!(f, "'{}'", q.replace('\'', "''")),
            Kind::QuotedName(q) => write!(f, "\"{q}\""),
            Kind::Symbol(s) => write!(f, "\"{s}\""),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    /// 1-based character position of the token's first character.
    position: usize,
}

/// A value as the language writes it: bare when it is one word (and not a
/// keyword), else single-quoted.
pub fn quote_value(text: &str) -> String {
    if is_bare(text) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "''"))
    }
}

/// A tag or column name as the language writes it: bare when it is one word
/// (and not a keyword), else double-quoted.
pub fn quote_name(text: &str) -> String {
    if is_bare(text) {
        text.to_string()
    } else {
        format!("\"{}\"", text.replace('"', "\"\""))
    }
}

fn is_bare(text: &str) -> bool {
    const KEYWORDS: [&str; 9] = [
        "and", "or", "not", "in", "between", "during", "last", "day", "days",
    ];
    !text.is_empty()
        && text.chars().all(is_word_char)
        && !KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(text))
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@')
}

fn tokenize(text: &str) -> Result<Vec<Token>> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let position = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let symbol = match (c, chars.get(i + 1)) {
            ('<', Some('=')) => Some("<="),
            ('>', Some('=')) => Some(">="),
            ('!', Some('=')) => Some("!="),
            ('<', Some('>')) => Some("!="),
            ('<', _) => Some("<"),
            ('>', _) => Some(">"),
            ('=', _) => Some("="),
            ('(', _) => Some("("),
            (')', _) => Some(")"),
            (',', _) => Some(","),
            _ => None,
        };
        if let Some(symbol) = symbol {
            let width = if matches!(symbol, "<=" | ">=" | "!=") {
                2
            } else {
                1
            };
            tokens.push(Token {
                kind: Kind::Symbol(symbol),
                position,
            });
            i += width;
            continue;
        }
        if c == '\'' || c == '"' {
            let mut text = String::new();
            let mut j = i + 1;
            loop {
                match chars.get(j) {
                    None => {
                        return Err(syntax(
                            position,
                            format!(
                                "unterminated quoted {}",
                                if c == '\'' { "value" } else { "name" }
                            ),
                        ));
                    }
                    Some(&q) if q == c && chars.get(j + 1) == Some(&c) => {
                        text.push(c);
                        j += 2;
                    }
                    Some(&q) if q == c => break,
                    Some(&other) => {
                        text.push(other);
                        j += 1;
                    }
                }
            }
            tokens.push(Token {
                kind: if c == '\'' {
                    Kind::Quoted(text)
                } else {
                    Kind::QuotedName(text)
                },
                position,
            });
            i = j + 1;
            continue;
        }
        if is_word_char(c) {
            let start = i;
            while i < chars.len() && is_word_char(chars[i]) {
                i += 1;
            }
            tokens.push(Token {
                kind: Kind::Word(chars[start..i].iter().collect()),
                position,
            });
            continue;
        }
        return Err(syntax(position, format!("unexpected character {c:?}")));
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    text_chars: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    /// Where the next token is, or just past the end.
    fn position(&self) -> usize {
        self.peek().map_or(self.text_chars + 1, |t| t.position)
    }

    fn found(&self) -> String {
        self.peek()
            .map_or("the end of the expression".to_string(), |t| {
                t.kind.to_string()
            })
    }

    fn expected(&self, what: &str) -> Error {
        syntax(
            self.position(),
            format!("expected {what}, found {}", self.found()),
        )
    }

    fn keyword(&mut self, word: &str) -> bool {
        let matched = matches!(self.peek(), Some(Token { kind: Kind::Word(w), .. }) if w.eq_ignore_ascii_case(word));
        if matched {
            self.at += 1;
        }
        matched
    }

    fn symbol(&mut self, symbol: &str) -> bool {
        let matched =
            matches!(self.peek(), Some(Token { kind: Kind::Symbol(s), .. }) if *s == symbol);
        if matched {
            self.at += 1;
        }
        matched
    }

    fn expect_symbol(&mut self, symbol: &str) -> Result<()> {
        if self.symbol(symbol) {
            Ok(())
        } else {
            Err(self.expected(&format!("\"{symbol}\"")))
        }
    }

    fn or(&mut self) -> Result<Audience> {
        let mut parts = vec![self.and()?];
        while self.keyword("OR") {
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Audience::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Audience> {
        let mut parts = vec![self.unary()?];
        while self.keyword("AND") {
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Audience::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Audience> {
        if self.keyword("NOT") {
            return Ok(Audience::Not(Box::new(self.unary()?)));
        }
        if self.symbol("(") {
            let inner = self.or()?;
            self.expect_symbol(")")?;
            return Ok(inner);
        }
        let term = self.term()?;
        if self.keyword("DURING") {
            return Ok(Audience::During(term, self.window()?));
        }
        Ok(Audience::Term(term))
    }

    fn name(&mut self) -> Result<String> {
        let name = match self.peek() {
            Some(Token {
                kind: Kind::Word(w),
                ..
            }) if !is_keyword(w) => w.clone(),
            Some(Token {
                kind: Kind::QuotedName(n),
                ..
            }) => n.clone(),
            _ => return Err(self.expected("a tag, segment or column name")),
        };
        self.at += 1;
        Ok(name)
    }

    fn value(&mut self) -> Result<Value> {
        let value = match self.peek() {
            Some(Token {
                kind: Kind::Word(w),
                ..
            }) if !is_keyword(w) => w.clone(),
            Some(Token {
                kind: Kind::Quoted(q),
                ..
            }) => q.clone(),
            _ => return Err(self.expected("a value")),
        };
        self.at += 1;
        Ok(Value(value))
    }

    fn number(&mut self) -> Result<Value> {
        let position = self.position();
        let value = self.value()?;
        if value.0.parse::<f64>().is_err() {
            return Err(syntax(
                position,
                format!("expected a number, found {:?}", value.0),
            ));
        }
        Ok(value)
    }

    fn term(&mut self) -> Result<Term> {
        let name = self.name()?;
        if self.symbol("=") {
            return Ok(Term::Equals {
                column: name,
                value: self.value()?,
            });
        }
        if self.keyword("IN") {
            self.expect_symbol("(")?;
            let mut values = vec![self.value()?];
            while self.symbol(",") {
                values.push(self.value()?);
            }
            self.expect_symbol(")")?;
            return Ok(Term::In {
                column: name,
                values,
            });
        }
        if self.keyword("BETWEEN") {
            let low = self.value()?;
            if !self.keyword("AND") {
                return Err(self.expected("AND"));
            }
            let high = self.value()?;
            return Ok(Term::Between {
                column: name,
                low,
                high,
            });
        }
        for (symbol, op) in [
            ("<", CompareOp::Lt),
            ("<=", CompareOp::LtEq),
            (">", CompareOp::Gt),
            (">=", CompareOp::GtEq),
        ] {
            if self.symbol(symbol) {
                return Ok(Term::Compare {
                    column: name,
                    op,
                    value: self.number()?,
                });
            }
        }
        if self.symbol("!=") {
            return Err(syntax(
                self.tokens[self.at - 1].position,
                format!("write NOT {name}=value instead of {name} != value"),
            ));
        }
        Ok(Term::Tag(name))
    }

    fn window(&mut self) -> Result<Window> {
        if self.keyword("LAST") {
            let position = self.position();
            let days = self.value()?;
            let days: u32 = days.0.parse().ok().filter(|&d| d > 0).ok_or_else(|| {
                syntax(
                    position,
                    format!("expected a number of days, found {:?}", days.0),
                )
            })?;
            if !(self.keyword("DAYS") || self.keyword("DAY")) {
                return Err(self.expected("DAYS"));
            }
            return Ok(Window::LastDays(days));
        }
        if self.keyword("BETWEEN") {
            let start = self.value()?;
            if !self.keyword("AND") {
                return Err(self.expected("AND"));
            }
            let end = self.value()?;
            return Ok(Window::Between { start, end });
        }
        Err(self.expected("LAST or BETWEEN"))
    }
}

fn is_keyword(word: &str) -> bool {
    ["AND", "OR", "NOT", "IN", "BETWEEN", "DURING"]
        .iter()
        .any(|k| k.eq_ignore_ascii_case(word))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::demo::Rng;

    fn tag(name: &str) -> Audience {
        Audience::Term(Term::Tag(name.to_string()))
    }

    fn equals(column: &str, value: &str) -> Audience {
        Audience::Term(Term::Equals {
            column: column.to_string(),
            value: Value(value.to_string()),
        })
    }

    #[test]
    fn expressions_parse_with_sql_precedence() {
        assert_eq!(
            parse("gender=f AND city IN (beijing, 'xi''an') AND purchase DURING LAST 30 DAYS AND NOT opted_out")
                .expect("parses"),
            Audience::And(vec![
                equals("gender", "f"),
                Audience::Term(Term::In {
                    column: "city".into(),
                    values: vec![Value("beijing".into()), Value("xi'an".into())],
                }),
                Audience::During(Term::Tag("purchase".into()), Window::LastDays(30)),
                Audience::Not(Box::new(tag("opted_out"))),
            ])
        );
        // AND binds tighter than OR; NOT tighter than both.
        assert_eq!(
            parse("a OR b and not c OR (d OR e) AND f").expect("parses"),
            Audience::Or(vec![
                tag("a"),
                Audience::And(vec![tag("b"), Audience::Not(Box::new(tag("c")))]),
                Audience::And(vec![Audience::Or(vec![tag("d"), tag("e")]), tag("f")]),
            ])
        );
        assert_eq!(
            parse(r#"age BETWEEN 25 AND 34 AND spend >= 1000.5 AND "odd name" AND event_type=purchase DURING BETWEEN 2026-01-01 AND '2026-01-31'"#)
                .expect("parses"),
            Audience::And(vec![
                Audience::Term(Term::Between {
                    column: "age".into(),
                    low: Value("25".into()),
                    high: Value("34".into()),
                }),
                Audience::Term(Term::Compare {
                    column: "spend".into(),
                    op: CompareOp::GtEq,
                    value: Value("1000.5".into()),
                }),
                tag("odd name"),
                Audience::During(
                    Term::Equals {
                        column: "event_type".into(),
                        value: Value("purchase".into()),
                    },
                    Window::Between {
                        start: Value("2026-01-01".into()),
                        end: Value("2026-01-31".into()),
                    },
                ),
            ])
        );
    }

    #[test]
    fn errors_point_at_the_position_and_say_what_was_expected() {
        let error = |text: &str| parse(text).expect_err("invalid").to_string();
        let cases = [
            (
                "",
                "at character 1: expected a tag, segment or column name, found the end of the expression",
            ),
            (
                "vip AND",
                "at character 8: expected a tag, segment or column name, found the end of the expression",
            ),
            (
                "vip OR OR x",
                "at character 8: expected a tag, segment or column name, found \"OR\"",
            ),
            (
                "(vip OR x",
                "at character 10: expected \")\", found the end of the expression",
            ),
            (
                "vip x",
                "at character 5: expected AND, OR or the end of the expression, found \"x\"",
            ),
            (
                "city IN beijing",
                "at character 9: expected \"(\", found \"beijing\"",
            ),
            (
                "city IN (a,)",
                "at character 12: expected a value, found \")\"",
            ),
            (
                "age > young",
                "at character 7: expected a number, found \"young\"",
            ),
            (
                "age BETWEEN 1 2",
                "at character 15: expected AND, found \"2\"",
            ),
            (
                "buy DURING LAST 0 DAYS",
                "at character 17: expected a number of days, found \"0\"",
            ),
            (
                "buy DURING LAST 3 WEEKS",
                "at character 19: expected DAYS, found \"WEEKS\"",
            ),
            (
                "buy DURING yesterday",
                "at character 12: expected LAST or BETWEEN, found \"yesterday\"",
            ),
            ("city='beijing", "at character 6: unterminated quoted value"),
            (
                "city != x",
                "at character 6: write NOT city=value instead of city != value",
            ),
            ("vip; DROP", "at character 4: unexpected character ';'"),
            (
                "城市=北京 AND ?",
                "at character 11: unexpected character '?'",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                error(text),
                format!("invalid audience expression {expected}"),
                "{text:?}"
            );
        }
    }

    /// One user of the test data.
    struct User {
        tags: Vec<String>,
        gender: String,
        city: String,
        age: i64,
        /// The days of the user's purchases.
        days: Vec<i64>,
    }

    /// Users with attributes, and the tags a tag index would build from them.
    struct Users {
        rows: Vec<User>,
    }

    const TODAY: i64 = 100;
    const CITIES: [&str; 4] = ["beijing", "shanghai", "xian", "chengdu"];

    impl Users {
        fn generate(seed: u64, n: usize) -> Users {
            let mut rng = Rng::new(seed);
            let rows = (0..n)
                .map(|i| {
                    let mut tags: Vec<String> = ["vip", "opted_out", "app", "web"]
                        .iter()
                        .filter(|_| rng.below(3) == 0)
                        .map(|t| t.to_string())
                        .collect();
                    // A contiguous run of users: run containers.
                    if i < n / 3 {
                        tags.push("early".to_string());
                    }
                    let gender = ["f", "m"][rng.below(2) as usize].to_string();
                    let city = CITIES[rng.below(4) as usize].to_string();
                    let age = 15 + rng.below(60) as i64;
                    let days = (0..rng.below(4))
                        .map(|_| rng.below(TODAY as u64 + 1) as i64)
                        .collect();
                    User {
                        tags,
                        gender,
                        city,
                        age,
                        days,
                    }
                })
                .collect();
            Users { rows }
        }

        fn value(&self, user: usize, column: &str) -> String {
            let row = &self.rows[user];
            match column {
                "gender" => row.gender.clone(),
                "city" => row.city.clone(),
                "age" => row.age.to_string(),
                _ => String::new(),
            }
        }

        /// The reference: each user checked against the expression directly.
        fn naive(&self, audience: &Audience, user: usize) -> bool {
            let row = &self.rows[user];
            match audience {
                Audience::Term(term) => self.naive_term(term, user),
                Audience::During(term, window) => {
                    let Term::Tag(name) = term else { return false };
                    name == "purchase"
                        && row.days.iter().any(|&day| match window {
                            Window::LastDays(n) => day > TODAY - i64::from(*n),
                            Window::Between { start, end } => {
                                let (s, e): (i64, i64) =
                                    (start.0.parse().expect("day"), end.0.parse().expect("day"));
                                day >= s && day <= e
                            }
                        })
                }
                Audience::Not(inner) => !self.naive(inner, user),
                Audience::And(parts) => parts.iter().all(|p| self.naive(p, user)),
                Audience::Or(parts) => parts.iter().any(|p| self.naive(p, user)),
            }
        }

        fn naive_term(&self, term: &Term, user: usize) -> bool {
            let age = self.rows[user].age as f64;
            let number = |v: &Value| v.0.parse::<f64>().expect("number");
            match term {
                Term::Tag(name) => self.rows[user].tags.contains(name),
                Term::Equals { column, value } => self.value(user, column) == value.0,
                Term::In { column, values } => {
                    values.iter().any(|v| self.value(user, column) == v.0)
                }
                Term::Compare { op, value, .. } => match op {
                    CompareOp::Lt => age < number(value),
                    CompareOp::LtEq => age <= number(value),
                    CompareOp::Gt => age > number(value),
                    CompareOp::GtEq => age >= number(value),
                },
                Term::Between { low, high, .. } => age >= number(low) && age <= number(high),
            }
        }
    }

    /// User `u`'s ordinal: 10,000 users to a container key, so larger test
    /// data has several keys, and bitmap containers (over 4,096 users).
    fn ordinal(u: usize) -> u32 {
        (u / 10_000 * 65_536 + u % 10_000) as u32
    }

    /// The users as bitmaps, the way the tag store keeps them: a bitmap per
    /// tag, per column value, per age and per purchase day.
    struct Bitmaps {
        /// Whether sets are run-compressed where that is smaller.
        optimize: bool,
        universe: RoaringBitmap,
        tags: BTreeMap<String, RoaringBitmap>,
        values: BTreeMap<(String, String), RoaringBitmap>,
        ages: BTreeMap<i64, RoaringBitmap>,
        days: BTreeMap<i64, RoaringBitmap>,
    }

    impl Bitmaps {
        fn build(users: &Users, optimize: bool) -> Bitmaps {
            let mut b = Bitmaps {
                optimize,
                universe: RoaringBitmap::new(),
                tags: BTreeMap::new(),
                values: BTreeMap::new(),
                ages: BTreeMap::new(),
                days: BTreeMap::new(),
            };
            for (user, row) in users.rows.iter().enumerate() {
                let user = ordinal(user);
                b.universe.insert(user);
                for t in &row.tags {
                    b.tags.entry(t.clone()).or_default().insert(user);
                }
                for (column, value) in [("gender", &row.gender), ("city", &row.city)] {
                    b.values
                        .entry((column.to_string(), value.clone()))
                        .or_default()
                        .insert(user);
                }
                b.ages.entry(row.age).or_default().insert(user);
                for day in &row.days {
                    b.days.entry(*day).or_default().insert(user);
                }
            }
            b
        }

        fn ages(&self, keep: impl Fn(f64) -> bool) -> Vec<&RoaringBitmap> {
            let ages = self.ages.iter();
            ages.filter(|(age, _)| keep(**age as f64))
                .map(|(_, users)| users)
                .collect()
        }
    }

    impl TagSource for Bitmaps {
        fn universe(&self) -> Result<Sets<'_>> {
            Ok(vec![Cow::Owned(self.frozen(&self.universe))])
        }

        fn term(&self, term: &Term, window: Option<&Window>) -> Result<Sets<'_>> {
            Ok(self
                .parts(term, window)
                .into_iter()
                .map(|users| Cow::Owned(self.frozen(users)))
                .collect())
        }
    }

    impl Bitmaps {
        fn frozen(&self, users: &RoaringBitmap) -> Frozen {
            let mut users = users.clone();
            if self.optimize {
                users.optimize();
            }
            Frozen::from_bitmap(&users)
        }

        /// The sets whose union a term is, as the tag store has them: one
        /// per value, age or day.
        fn parts(&self, term: &Term, window: Option<&Window>) -> Vec<&RoaringBitmap> {
            let number = |v: &Value| v.0.parse::<f64>().expect("number");
            if let Some(window) = window {
                let (first, last) = match window {
                    Window::LastDays(n) => (TODAY - i64::from(*n) + 1, TODAY),
                    Window::Between { start, end } => {
                        (start.0.parse().expect("day"), end.0.parse().expect("day"))
                    }
                };
                if term != &Term::Tag("purchase".into()) || first > last {
                    return Vec::new();
                }
                return self
                    .days
                    .range(first..=last)
                    .map(|(_, users)| users)
                    .collect();
            }
            let value = |column: &String, value: &Value| {
                self.values.get(&(column.clone(), value.0.clone()))
            };
            match term {
                Term::Tag(name) => self.tags.get(name).into_iter().collect(),
                Term::Equals { column, value: v } => value(column, v).into_iter().collect(),
                Term::In { column, values } => {
                    values.iter().filter_map(|v| value(column, v)).collect()
                }
                Term::Compare { op, value, .. } => {
                    let n = number(value);
                    match op {
                        CompareOp::Lt => self.ages(|a| a < n),
                        CompareOp::LtEq => self.ages(|a| a <= n),
                        CompareOp::Gt => self.ages(|a| a > n),
                        CompareOp::GtEq => self.ages(|a| a >= n),
                    }
                }
                Term::Between { low, high, .. } => {
                    let (l, h) = (number(low), number(high));
                    self.ages(|a| a >= l && a <= h)
                }
            }
        }
    }

    /// A random expression as text, up to `depth` levels of nesting.
    fn random_text(rng: &mut Rng, depth: u32) -> String {
        let leaf = |rng: &mut Rng| -> String {
            match rng.below(10) {
                0 => ["vip", "opted_out", "app", "web", "early", "nobody"][rng.below(6) as usize]
                    .to_string(),
                1 => format!("gender={}", ["f", "m", "x"][rng.below(3) as usize]),
                2 => format!("city='{}'", CITIES[rng.below(4) as usize]),
                3 => format!(
                    "city IN ({}, {})",
                    CITIES[rng.below(4) as usize],
                    CITIES[rng.below(4) as usize]
                ),
                4 => format!(
                    "age {} {}",
                    ["<", "<=", ">", ">="][rng.below(4) as usize],
                    10 + rng.below(70)
                ),
                5 => {
                    let low = 10 + rng.below(60);
                    format!("age BETWEEN {low} AND {}", low + rng.below(30))
                }
                6 => format!("purchase DURING LAST {} DAYS", 1 + rng.below(120)),
                7 => {
                    let start = rng.below(101);
                    format!(
                        "purchase DURING BETWEEN {start} AND {}",
                        start + rng.below(40)
                    )
                }
                8 => "NOT vip".to_string(),
                // NOT of a term that is a union of several sets.
                _ => match rng.below(3) {
                    0 => format!(
                        "NOT city IN ({}, {})",
                        CITIES[0],
                        CITIES[rng.below(4) as usize]
                    ),
                    1 => format!("NOT age > {}", 10 + rng.below(70)),
                    _ => format!("NOT purchase DURING LAST {} DAYS", 1 + rng.below(120)),
                },
            }
        };
        if depth == 0 || rng.below(3) == 0 {
            return leaf(rng);
        }
        let parts: Vec<String> = (0..2 + rng.below(3))
            .map(|_| random_text(rng, depth - 1))
            .collect();
        let joined = parts.join([" AND ", " OR "][rng.below(2) as usize]);
        match rng.below(3) {
            0 => format!("NOT ({joined})"),
            _ => format!("({joined})"),
        }
    }

    /// Evaluation, listing and counting over bitmaps agree with checking every user
    /// against the expression, on random data and random expressions: many
    /// small sets of users (one container key, array containers), and a few
    /// larger ones over three keys with bitmap and run containers.
    #[test]
    fn bitmap_evaluation_matches_a_scan_of_the_users() {
        let cases = (0..20u64)
            .map(|seed| (seed, 500, 100))
            .chain((20..24).map(|seed| (seed, 25_000, 25)));
        for (seed, n, expressions) in cases {
            let users = Users::generate(seed, n);
            let bitmaps = Bitmaps::build(&users, seed % 2 == 1);
            let mut rng = Rng::new(seed ^ 0xA5A5);
            for _ in 0..expressions {
                let text = random_text(&mut rng, 3);
                let audience = parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
                let expected: RoaringBitmap = (0..users.rows.len())
                    .filter(|&u| users.naive(&audience, u))
                    .map(ordinal)
                    .collect();
                let found = evaluate(&audience, &bitmaps).expect("evaluates");
                assert_eq!(found, expected, "seed {seed}: {text}");
                assert_eq!(
                    ordinals(&audience, &bitmaps).expect("lists"),
                    expected.iter().collect::<Vec<_>>(),
                    "seed {seed}: {text}"
                );
                assert_eq!(
                    count(&audience, &bitmaps).expect("counts"),
                    expected.len(),
                    "seed {seed}: {text}"
                );
            }
        }
    }
}
