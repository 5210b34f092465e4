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

/// Optimal-string-alignment distance: insertions, deletions, substitutions and transpositions.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Long inputs cannot be typos of our short keywords; bail out before quadratic work.
    if a.len().abs_diff(b.len()) > 3 || a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
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
}
