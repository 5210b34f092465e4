//! Integer expressions in argument values (`planes * 4`, `(i + 1) * 32`): one parser both
//! front-ends call on the text they delimit, so YAML and the DSL build the same [`Expr`], and
//! the evaluator [`crate::expand`] runs with block parameters and the repetition index bound.
//! Arithmetic is Python's (`//` rounds down, `%` takes the divisor's sign) and checked.

use crate::MAX_NESTING;
use crate::ast::{BinOp, Expr, ExprKind, ValueKind};
use crate::span::Span;

/// Why a text is not an expression.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum SyntaxError {
    /// A character that is not part of an expression.
    Unexpected {
        /// Where.
        span: Span,
        /// The text found ("end of text" at the end).
        found: String,
    },
    /// `/`, true division, which has no integer result.
    Slash {
        /// The `/`.
        span: Span,
    },
    /// Parentheses or signs nested beyond [`MAX_NESTING`].
    TooDeep {
        /// The parenthesis or sign one level too deep.
        span: Span,
    },
}

/// Why an expression has no value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum EvalError {
    /// A name that is neither a parameter nor `i` in scope.
    UnknownName {
        /// The name.
        span: Span,
        /// Its text.
        name: String,
    },
    /// A name bound to something other than an integer.
    NotInteger {
        /// The name.
        span: Span,
        /// Its text.
        name: String,
        /// What it is ("a boolean", ...).
        found: &'static str,
    },
    /// `x // 0` or `x % 0`.
    DivisionByZero {
        /// The whole division.
        span: Span,
        /// The divisor's span.
        divisor: Span,
    },
    /// A result outside 64-bit integers.
    Overflow {
        /// The operation.
        span: Span,
    },
}

/// What a name is bound to, for [`eval`].
pub(crate) enum Binding {
    /// An integer.
    Int(i64),
    /// Something else, described ("a boolean").
    Other(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Token<'a> {
    Int(i64),
    Name(&'a str),
    Op(BinOp),
    Minus,
    Slash,
    Open,
    Close,
}

/// Whether `text` looks like arithmetic (an operator between words or numbers, or
/// parentheses) rather than a plain word: what a YAML string must be to be read as an
/// expression.
pub(crate) fn looks_like_expr(text: &str) -> bool {
    let trimmed = text.trim();
    let signed_integer = trimmed
        .strip_prefix('-')
        .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()));
    let has_operator =
        text.contains(['+', '*', '/', '%', '(', ')']) || (text.contains('-') && !signed_integer);
    has_operator
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " \t_+-*/%()".contains(c))
        && text.chars().any(|c| c.is_ascii_alphanumeric())
}

/// An expression as a value: a lone integer or name (`(3)`, `(planes)`) reads as the plain value
/// it is, so that every language prints and reads it back the same.
pub(crate) fn into_value(expr: Expr) -> ValueKind {
    match expr.kind {
        ExprKind::Int(v) => ValueKind::Int(v),
        ExprKind::Name(name) => ValueKind::Str(name),
        _ => ValueKind::Expr(expr),
    }
}

/// Parses `text`, which starts at byte `base` of the spec, into an expression.
pub(crate) fn parse(text: &str, base: usize) -> Result<Expr, SyntaxError> {
    let tokens = tokenize(text, base)?;
    let mut parser = Parser {
        tokens: &tokens,
        at: 0,
        end: base + text.len(),
        depth: 0,
    };
    let expr = parser.sum()?;
    match parser.tokens.get(parser.at) {
        None => Ok(expr),
        Some(&(token, span)) => Err(unexpected(token, span)),
    }
}

fn unexpected(token: Token<'_>, span: Span) -> SyntaxError {
    match token {
        Token::Slash => SyntaxError::Slash { span },
        token => SyntaxError::Unexpected {
            span,
            found: match token {
                Token::Int(v) => v.to_string(),
                Token::Name(name) => name.to_owned(),
                Token::Op(op) => op.symbol().to_owned(),
                Token::Minus => "-".to_owned(),
                Token::Slash => "/".to_owned(),
                Token::Open => "(".to_owned(),
                Token::Close => ")".to_owned(),
            },
        },
    }
}

fn tokenize(text: &str, base: usize) -> Result<Vec<(Token<'_>, Span)>, SyntaxError> {
    let mut tokens = Vec::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let c = bytes[at];
        let token = match c {
            b' ' | b'\t' => {
                at += 1;
                continue;
            }
            b'0'..=b'9' => {
                while at < bytes.len() && bytes[at].is_ascii_digit() {
                    at += 1;
                }
                // Beyond every size limit; the checker reports it as too large.
                Token::Int(text[start..at].parse().unwrap_or(i64::MAX))
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_') {
                    at += 1;
                }
                Token::Name(&text[start..at])
            }
            b'+' => {
                at += 1;
                Token::Op(BinOp::Add)
            }
            b'-' => {
                at += 1;
                Token::Minus
            }
            b'*' => {
                at += 1;
                Token::Op(BinOp::Mul)
            }
            b'%' => {
                at += 1;
                Token::Op(BinOp::Rem)
            }
            b'/' if bytes.get(at + 1) == Some(&b'/') => {
                at += 2;
                Token::Op(BinOp::FloorDiv)
            }
            b'/' => {
                at += 1;
                Token::Slash
            }
            b'(' => {
                at += 1;
                Token::Open
            }
            b')' => {
                at += 1;
                Token::Close
            }
            _ => {
                let len = text[start..].chars().next().map_or(1, char::len_utf8);
                return Err(SyntaxError::Unexpected {
                    span: Span::new(base + start, base + start + len),
                    found: text[start..start + len].to_owned(),
                });
            }
        };
        tokens.push((token, Span::new(base + start, base + at)));
    }
    Ok(tokens)
}

struct Parser<'t, 'a> {
    tokens: &'t [(Token<'a>, Span)],
    at: usize,
    end: usize,
    depth: usize,
}

impl<'a> Parser<'_, 'a> {
    fn peek(&self) -> Option<(Token<'a>, Span)> {
        self.tokens.get(self.at).copied()
    }

    fn binary(op: BinOp, left: Expr, right: Expr) -> Expr {
        let span = Span::new(left.span.start as usize, right.span.end as usize);
        Expr {
            kind: ExprKind::Binary(op, Box::new(left), Box::new(right)),
            span,
        }
    }

    /// `product (('+' | '-') product)*`.
    fn sum(&mut self) -> Result<Expr, SyntaxError> {
        let mut left = self.product()?;
        loop {
            let op = match self.peek() {
                Some((Token::Op(BinOp::Add), _)) => BinOp::Add,
                Some((Token::Minus, _)) => BinOp::Sub,
                _ => return Ok(left),
            };
            self.at += 1;
            let right = self.product()?;
            left = Self::binary(op, left, right);
        }
    }

    /// `unary (('*' | '//' | '%') unary)*`.
    fn product(&mut self) -> Result<Expr, SyntaxError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Some((Token::Op(op @ (BinOp::Mul | BinOp::FloorDiv | BinOp::Rem)), _)) => op,
                Some((Token::Slash, span)) => return Err(SyntaxError::Slash { span }),
                _ => return Ok(left),
            };
            self.at += 1;
            let right = self.unary()?;
            left = Self::binary(op, left, right);
        }
    }

    /// `'-' unary | INT | NAME | '(' sum ')'`.
    fn unary(&mut self) -> Result<Expr, SyntaxError> {
        let Some((token, span)) = self.peek() else {
            return Err(SyntaxError::Unexpected {
                span: Span::new(self.end, self.end),
                found: "end of text".to_owned(),
            });
        };
        self.at += 1;
        match token {
            Token::Int(v) => Ok(Expr {
                kind: ExprKind::Int(v),
                span,
            }),
            Token::Name(name) => Ok(Expr {
                kind: ExprKind::Name(name.to_owned()),
                span,
            }),
            Token::Minus | Token::Open => {
                self.depth += 1;
                if self.depth > MAX_NESTING {
                    return Err(SyntaxError::TooDeep { span });
                }
                let expr = if token == Token::Minus {
                    let operand = self.unary()?;
                    let whole = Span::new(span.start as usize, operand.span.end as usize);
                    Expr {
                        kind: ExprKind::Neg(Box::new(operand)),
                        span: whole,
                    }
                } else {
                    let inner = self.sum()?;
                    match self.peek() {
                        Some((Token::Close, close)) => {
                            self.at += 1;
                            Expr {
                                kind: inner.kind,
                                span: Span::new(span.start as usize, close.end as usize),
                            }
                        }
                        Some((token, at)) => return Err(unexpected(token, at)),
                        None => {
                            return Err(SyntaxError::Unexpected {
                                span: Span::new(self.end, self.end),
                                found: "end of text".to_owned(),
                            });
                        }
                    }
                };
                self.depth -= 1;
                Ok(expr)
            }
            token => Err(unexpected(token, span)),
        }
    }
}

/// Evaluates `expr` with `lookup` giving each name's binding.
pub(crate) fn eval(
    expr: &Expr,
    lookup: &dyn Fn(&str) -> Option<Binding>,
) -> Result<i64, EvalError> {
    match &expr.kind {
        ExprKind::Int(v) => Ok(*v),
        ExprKind::Name(name) => match lookup(name) {
            Some(Binding::Int(v)) => Ok(v),
            Some(Binding::Other(found)) => Err(EvalError::NotInteger {
                span: expr.span,
                name: name.clone(),
                found,
            }),
            None => Err(EvalError::UnknownName {
                span: expr.span,
                name: name.clone(),
            }),
        },
        ExprKind::Neg(operand) => eval(operand, lookup)?
            .checked_neg()
            .ok_or(EvalError::Overflow { span: expr.span }),
        ExprKind::Binary(op, left, right) => {
            let (a, b) = (eval(left, lookup)?, eval(right, lookup)?);
            if matches!(op, BinOp::FloorDiv | BinOp::Rem) && b == 0 {
                return Err(EvalError::DivisionByZero {
                    span: expr.span,
                    divisor: right.span,
                });
            }
            let value = match op {
                BinOp::Add => a.checked_add(b),
                BinOp::Sub => a.checked_sub(b),
                BinOp::Mul => a.checked_mul(b),
                BinOp::FloorDiv => a.checked_div_euclid(b).map(|q| {
                    // Python rounds toward negative infinity; Euclid's quotient differs when
                    // the divisor is negative and the division is inexact.
                    if b < 0 && a.rem_euclid(b) != 0 {
                        q - 1
                    } else {
                        q
                    }
                }),
                BinOp::Rem => a
                    .checked_rem_euclid(b)
                    .map(|r| if b < 0 && r != 0 { r + b } else { r }),
            };
            value.ok_or(EvalError::Overflow { span: expr.span })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> i64 {
        let expr = parse(text, 0).expect("parses");
        eval(&expr, &|name| match name {
            "planes" => Some(Binding::Int(16)),
            "i" => Some(Binding::Int(2)),
            "flag" => Some(Binding::Other("a boolean")),
            _ => None,
        })
        .expect("evaluates")
    }

    #[test]
    fn arithmetic_follows_python() {
        assert_eq!(value("planes * 4"), 64);
        assert_eq!(value("(i + 1) * 32"), 96);
        assert_eq!(value("1 + 2 * 3"), 7);
        assert_eq!(value("7 // 2"), 3);
        assert_eq!(value("-7 // 2"), -4);
        assert_eq!(value("7 // -2"), -4);
        assert_eq!(value("-7 % 3"), 2);
        assert_eq!(value("7 % -3"), -2);
        assert_eq!(value("10 - 3 - 2"), 5);
        assert_eq!(value("--3"), 3);
    }

    #[test]
    fn canonical_text_keeps_meaning() {
        for text in [
            "planes*4",
            "(i+1)*32",
            "10-(3-2)",
            "(1+2)+3",
            "-(planes+1)",
            "2*(3//2)",
        ] {
            let expr = parse(text, 0).expect("parses");
            let again = parse(&expr.to_text(), 0).expect("reparses");
            assert_eq!(value(text), value(&expr.to_text()), "{text}");
            assert_eq!(expr.to_text(), again.to_text(), "{text}");
        }
        assert_eq!(parse("(i+1)*32", 0).unwrap().to_text(), "(i + 1) * 32");
        assert_eq!(parse("10-(3-2)", 0).unwrap().to_text(), "10 - (3 - 2)");
    }

    #[test]
    fn errors_name_the_place() {
        assert_eq!(
            parse("planes / 2", 10),
            Err(SyntaxError::Slash {
                span: Span::new(17, 18)
            })
        );
        assert!(matches!(
            parse("(1 + 2", 0),
            Err(SyntaxError::Unexpected { .. })
        ));
        assert!(matches!(
            parse("1 +", 0),
            Err(SyntaxError::Unexpected { .. })
        ));
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert!(matches!(parse(&deep, 0), Err(SyntaxError::TooDeep { .. })));
        let lookup = |_: &str| None;
        let zero = parse("4 // (2 - 2)", 0).unwrap();
        assert!(matches!(
            eval(&zero, &lookup),
            Err(EvalError::DivisionByZero { .. })
        ));
        let big = parse("9223372036854775807 + 1", 0).unwrap();
        assert!(matches!(
            eval(&big, &lookup),
            Err(EvalError::Overflow { .. })
        ));
        let flag = parse("flag * 2", 0).unwrap();
        let bound = |_: &str| Some(Binding::Other("a boolean"));
        assert!(matches!(
            eval(&flag, &bound),
            Err(EvalError::NotInteger { .. })
        ));
    }

    #[test]
    fn words_are_not_expressions() {
        assert!(looks_like_expr("planes * 4"));
        assert!(looks_like_expr("(i+1)"));
        assert!(!looks_like_expr("same"));
        assert!(!looks_like_expr("-"));
        assert!(!looks_like_expr("layer1.0"));
        assert!(!looks_like_expr("-3"));
        assert!(looks_like_expr("-x"));
    }
}
