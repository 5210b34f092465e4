//! Did-you-mean suggestions for misspelt layer kinds, arguments and keys.

/// The candidate closest to `word`, if one is close enough to be a plausible typo: equal ignoring
/// case, `_` and `-`, or within an edit distance of about a third of the word's length.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let normal = normalize(word);
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|candidate| {
            let candidate_normal = normalize(candidate);
            let distance = if candidate_normal == normal {
                0
            } else if normal.len() >= 3 && candidate_normal.starts_with(&normal) {
                // `conv` for `conv2d`, `batchnorm` for `batchnorm2d`.
                1
            } else {
                edit_distance(&normal, &candidate_normal)
            };
            (distance, candidate)
        })
        .filter(|&(distance, _)| distance <= limit)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

fn normalize(word: &str) -> String {
    word.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Longest word compared: long inputs cannot be typos of our short keywords.
const MAX_WORD: usize = 64;

/// Optimal-string-alignment distance: insertions, deletions, substitutions and transpositions;
/// `usize::MAX` for words too long or too different in length to be typos of each other. Three
/// rows on the stack: a spec with 60,000 misspelt keys asks for 200,000 distances.
fn edit_distance(a: &str, b: &str) -> usize {
    let mut a_chars = ['\0'; MAX_WORD];
    let mut b_chars = ['\0'; MAX_WORD];
    let (Some(n), Some(m)) = (fill(&mut a_chars, a), fill(&mut b_chars, b)) else {
        return usize::MAX;
    };
    if n.abs_diff(m) > 3 {
        return usize::MAX;
    }
    let (a, b) = (&a_chars[..n], &b_chars[..m]);
    // Rows i-2, i-1 and i of the usual table.
    let mut before = [0usize; MAX_WORD + 1];
    let mut previous: [usize; MAX_WORD + 1] = std::array::from_fn(|j| j);
    let mut current = [0usize; MAX_WORD + 1];
    for i in 1..=n {
        current[0] = i;
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        before = previous;
        previous = current;
    }
    previous[m]
}

/// Copies the characters of `word` into `buffer`; their count, or `None` if they do not fit.
fn fill(buffer: &mut [char; MAX_WORD], word: &str) -> Option<usize> {
    let mut count = 0;
    for c in word.chars() {
        *buffer.get_mut(count)? = c;
        count += 1;
    }
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_typos_and_case_variants() {
        let kinds = ["conv2d", "maxpool2d", "relu", "linear"];
        assert_eq!(closest("conv2", kinds), Some("conv2d"));
        assert_eq!(closest("Conv2d", kinds), Some("conv2d"));
        assert_eq!(closest("max_pool2d", kinds), Some("maxpool2d"));
        assert_eq!(closest("lineer", kinds), Some("linear"));
        assert_eq!(closest("rleu", kinds), Some("relu"));
        assert_eq!(closest("conv", kinds), Some("conv2d"));
        assert_eq!(closest("MaxPool", kinds), Some("maxpool2d"));
        assert_eq!(closest("transformer", kinds), None);
    }

    #[test]
    fn distances_count_edits_and_give_up_on_long_words() {
        assert_eq!(edit_distance("kernel", "kernel"), 0);
        assert_eq!(edit_distance("kernal", "kernel"), 1);
        assert_eq!(edit_distance("kenrel", "kernel"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("stride", "padding"), 6);
        assert_eq!(edit_distance("a", "abcde"), usize::MAX);
        assert_eq!(edit_distance(&"x".repeat(65), &"x".repeat(65)), usize::MAX);
        assert_eq!(edit_distance(&"x".repeat(64), &"x".repeat(63)), 1);
    }
}
