//! A layered (Sugiyama-style) layout of a directed acyclic graph with nested groups, for
//! `cnnc draw`: ranks by longest path, dummy nodes on edges that span ranks, barycentre ordering
//! sweeps that keep each group's nodes together (so its box holds them), and x positions pulled
//! toward their neighbours under the spacing constraints (isotonic regression). Deterministic:
//! the same graph always gives the same coordinates.

use std::cmp::Ordering;

/// Horizontal space between neighbouring nodes.
const GAP: f64 = 24.0;
/// Vertical space between ranks, before group margins.
const RANK_GAP: f64 = 36.0;
/// Margin of a group's box around what it holds.
pub const PAD: f64 = 10.0;
/// Height of a group's title, above its contents.
pub const TITLE: f64 = 16.0;
/// Margin around the whole drawing.
const MARGIN: f64 = 16.0;
/// Width of a dummy node: how much room an edge passing through a rank takes.
const DUMMY_WIDTH: f64 = 8.0;
/// Ordering sweeps (each down then up).
const ORDER_SWEEPS: usize = 12;
/// Positioning sweeps.
const PLACE_SWEEPS: usize = 16;

/// A node to place.
#[derive(Clone, Debug)]
pub struct Node {
    /// Its box's width.
    pub width: f64,
    /// Its box's height.
    pub height: f64,
    /// The groups it is in, outermost first (indices into [`Graph::groups`]).
    pub groups: Vec<usize>,
}

/// A graph to lay out: nodes in topological order, edges from an earlier to a later node.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// The nodes.
    pub nodes: Vec<Node>,
    /// The edges, `(from, to)` with `from < to`.
    pub edges: Vec<(usize, usize)>,
    /// How many groups the nodes' `groups` name.
    pub groups: usize,
}

/// A rectangle: left, top, width, height.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rect {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
}

/// Where everything goes.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Each node's box.
    pub nodes: Vec<Rect>,
    /// Each edge's path, from the bottom of its source to the top of its target.
    pub edges: Vec<Vec<(f64, f64)>>,
    /// Each group's box (empty for a group without nodes).
    pub groups: Vec<Rect>,
    /// The drawing's width.
    pub width: f64,
    /// The drawing's height.
    pub height: f64,
}

/// The graph with dummy nodes: what ordering and positioning work on.
struct Ranked {
    /// Rank of each node, real ones first, then dummies.
    rank: Vec<usize>,
    width: Vec<f64>,
    groups: Vec<Vec<usize>>,
    /// Each rank's nodes, in order.
    ranks: Vec<Vec<usize>>,
    /// Predecessors and successors in the adjacent ranks.
    up: Vec<Vec<usize>>,
    down: Vec<Vec<usize>>,
    /// Each edge's chain of nodes, its source and target included.
    chains: Vec<Vec<usize>>,
}

/// How many nodes (real and dummy) the layout of `graph` has: its cost, which callers bound.
pub fn size(graph: &Graph) -> usize {
    let rank = ranks(graph);
    graph.nodes.len()
        + graph
            .edges
            .iter()
            .map(|&(a, b)| rank[b].saturating_sub(rank[a] + 1))
            .sum::<usize>()
}

/// Longest-path ranks: a node sits one below the lowest of its predecessors.
fn ranks(graph: &Graph) -> Vec<usize> {
    let mut rank = vec![0usize; graph.nodes.len()];
    let mut edges = graph.edges.clone();
    edges.sort_by_key(|&(a, b)| (b, a));
    for (a, b) in edges {
        rank[b] = rank[b].max(rank[a] + 1);
    }
    rank
}

/// Lays `graph` out.
pub fn layout(graph: &Graph) -> Layout {
    let mut ranked = rank_graph(graph);
    order(&mut ranked);
    let x = place(&ranked);
    finish(graph, &ranked, &x)
}

fn rank_graph(graph: &Graph) -> Ranked {
    let mut rank = ranks(graph);
    let mut width: Vec<f64> = graph.nodes.iter().map(|n| n.width).collect();
    let mut groups: Vec<Vec<usize>> = graph.nodes.iter().map(|n| n.groups.clone()).collect();
    let mut chains = Vec::with_capacity(graph.edges.len());
    for &(a, b) in &graph.edges {
        let mut chain = vec![a];
        // A dummy belongs to the groups both ends are in, so it stays in their box.
        let shared: Vec<usize> = groups[a]
            .iter()
            .zip(&groups[b])
            .take_while(|(x, y)| x == y)
            .map(|(x, _)| *x)
            .collect();
        for r in rank[a] + 1..rank[b] {
            chain.push(rank.len());
            rank.push(r);
            width.push(DUMMY_WIDTH);
            groups.push(shared.clone());
        }
        chain.push(b);
        chains.push(chain);
    }
    let count = rank.len();
    let mut ranks = vec![Vec::new(); rank.iter().max().map_or(0, |m| m + 1)];
    for (node, &r) in rank.iter().enumerate() {
        ranks[r].push(node);
    }
    let mut up = vec![Vec::new(); count];
    let mut down = vec![Vec::new(); count];
    for chain in &chains {
        for pair in chain.windows(2) {
            down[pair[0]].push(pair[1]);
            up[pair[1]].push(pair[0]);
        }
    }
    Ranked {
        rank,
        width,
        groups,
        ranks,
        up,
        down,
        chains,
    }
}

/// Barycentre sweeps, keeping the ordering with the fewest crossings.
fn order(g: &mut Ranked) {
    let mut position = vec![0usize; g.rank.len()];
    let index = |ranks: &[Vec<usize>], position: &mut [usize]| {
        for rank in ranks {
            for (i, &node) in rank.iter().enumerate() {
                position[node] = i;
            }
        }
    };
    index(&g.ranks, &mut position);
    let mut best = g.ranks.clone();
    let mut best_crossings = crossings(g, &position);
    for _ in 0..ORDER_SWEEPS {
        if best_crossings == 0 {
            break;
        }
        for r in 1..g.ranks.len() {
            sort_rank(g, r, &position, true);
            index(&g.ranks[r..=r], &mut position);
        }
        for r in (0..g.ranks.len().saturating_sub(1)).rev() {
            sort_rank(g, r, &position, false);
            index(&g.ranks[r..=r], &mut position);
        }
        let now = crossings(g, &position);
        if now < best_crossings {
            best_crossings = now;
            best = g.ranks.clone();
        }
    }
    g.ranks = best;
}

/// Sorts rank `r` by the barycentres of each node's neighbours in the rank above (`from_above`)
/// or below, comparing groups as units so that a group's nodes stay together.
fn sort_rank(g: &mut Ranked, r: usize, position: &[usize], from_above: bool) {
    let rank = &g.ranks[r];
    let centre = |node: usize| {
        let neighbours = if from_above {
            &g.up[node]
        } else {
            &g.down[node]
        };
        if neighbours.is_empty() {
            position[node] as f64
        } else {
            neighbours.iter().map(|&n| position[n] as f64).sum::<f64>() / neighbours.len() as f64
        }
    };
    let centres: Vec<f64> = rank.iter().map(|&n| centre(n)).collect();
    // Each group's barycentre in this rank, and its first position (the tie-break).
    let mut group_sum: std::collections::HashMap<usize, (f64, usize, usize)> =
        std::collections::HashMap::new();
    for (i, &node) in rank.iter().enumerate() {
        for &group in &g.groups[node] {
            let entry = group_sum.entry(group).or_insert((0.0, 0, usize::MAX));
            entry.0 += centres[i];
            entry.1 += 1;
            entry.2 = entry.2.min(position[node]);
        }
    }
    let key = |i: usize| -> Vec<(f64, usize)> {
        let node = rank[i];
        let mut key: Vec<(f64, usize)> = g.groups[node]
            .iter()
            .map(|group| {
                let (sum, count, first) = group_sum[group];
                (sum / count as f64, first)
            })
            .collect();
        key.push((centres[i], position[node]));
        key
    };
    let keys: Vec<Vec<(f64, usize)>> = (0..rank.len()).map(key).collect();
    let mut sorted: Vec<usize> = (0..rank.len()).collect();
    sorted.sort_by(|&a, &b| {
        for (x, y) in keys[a].iter().zip(&keys[b]) {
            let by = x.0.total_cmp(&y.0).then(x.1.cmp(&y.1));
            if by != Ordering::Equal {
                return by;
            }
        }
        keys[a].len().cmp(&keys[b].len())
    });
    g.ranks[r] = sorted.into_iter().map(|i| rank[i]).collect();
}

/// Edge crossings between adjacent ranks.
fn crossings(g: &Ranked, position: &[usize]) -> usize {
    let mut total = 0;
    for rank in &g.ranks {
        let mut segments: Vec<(usize, usize)> = rank
            .iter()
            .flat_map(|&a| g.down[a].iter().map(move |&b| (a, b)))
            .map(|(a, b)| (position[a], position[b]))
            .collect();
        segments.sort_unstable();
        for (i, &(_, b)) in segments.iter().enumerate() {
            total += segments[i + 1..]
                .iter()
                .filter(|&&(a2, b2)| b2 < b && a2 != segments[i].0)
                .count();
        }
    }
    total
}

/// Room between two neighbouring nodes: their half widths, the gap, and a group margin for each
/// box edge between them.
fn spacing(g: &Ranked, a: usize, b: usize) -> f64 {
    let shared = g.groups[a]
        .iter()
        .zip(&g.groups[b])
        .take_while(|(x, y)| x == y)
        .count();
    let boundaries = (g.groups[a].len() - shared) + (g.groups[b].len() - shared);
    (g.width[a] + g.width[b]) / 2.0 + GAP + PAD * boundaries as f64
}

/// x of every node's centre: packed, then pulled toward the mean of its neighbours in alternate
/// sweeps, each rank placed as close to those targets as its order and spacing allow.
fn place(g: &Ranked) -> Vec<f64> {
    let mut x = vec![0.0f64; g.rank.len()];
    for rank in &g.ranks {
        let mut at = 0.0;
        for (i, &node) in rank.iter().enumerate() {
            if i > 0 {
                at += spacing(g, rank[i - 1], node);
            }
            x[node] = at;
        }
    }
    for sweep in 0..PLACE_SWEEPS {
        let down = sweep % 2 == 0;
        let order: Vec<usize> = if down {
            (1..g.ranks.len()).collect()
        } else {
            (0..g.ranks.len().saturating_sub(1)).rev().collect()
        };
        for r in order {
            let rank = &g.ranks[r];
            let targets: Vec<f64> = rank
                .iter()
                .map(|&node| {
                    let neighbours = if down { &g.up[node] } else { &g.down[node] };
                    if neighbours.is_empty() {
                        x[node]
                    } else {
                        neighbours.iter().map(|&n| x[n]).sum::<f64>() / neighbours.len() as f64
                    }
                })
                .collect();
            let gaps: Vec<f64> = rank.windows(2).map(|w| spacing(g, w[0], w[1])).collect();
            for (node, value) in rank.iter().zip(closest_ordered(&targets, &gaps)) {
                x[*node] = value;
            }
        }
    }
    x
}

/// Positions `p` closest to `targets` (least squares) with `p[i + 1] - p[i] >= gaps[i]`: the
/// pool-adjacent-violators algorithm on the targets less the cumulative gaps.
fn closest_ordered(targets: &[f64], gaps: &[f64]) -> Vec<f64> {
    let mut offset = vec![0.0; targets.len()];
    for i in 1..targets.len() {
        offset[i] = offset[i - 1] + gaps[i - 1];
    }
    // Blocks of (sum, count), each block's value its mean; means nondecreasing.
    let mut blocks: Vec<(f64, usize)> = Vec::new();
    for (t, o) in targets.iter().zip(&offset) {
        blocks.push((t - o, 1));
        while blocks.len() > 1 {
            let (s2, c2) = blocks[blocks.len() - 1];
            let (s1, c1) = blocks[blocks.len() - 2];
            if s1 / c1 as f64 <= s2 / c2 as f64 {
                break;
            }
            blocks.pop();
            let last = blocks.len() - 1;
            blocks[last] = (s1 + s2, c1 + c2);
        }
    }
    let mut out = Vec::with_capacity(targets.len());
    for (sum, count) in blocks {
        let mean = sum / count as f64;
        for _ in 0..count {
            let i = out.len();
            out.push(mean + offset[i]);
        }
    }
    out
}

/// y of each rank, the boxes of nodes and groups, the edges' paths, shifted to the margins.
fn finish(graph: &Graph, g: &Ranked, x: &[f64]) -> Layout {
    let real = graph.nodes.len();
    // Ranks each group spans (over its real nodes).
    let mut span: Vec<Option<(usize, usize)>> = vec![None; graph.groups];
    for node in 0..real {
        for &group in &g.groups[node] {
            let r = g.rank[node];
            let s = span[group].get_or_insert((r, r));
            s.0 = s.0.min(r);
            s.1 = s.1.max(r);
        }
    }
    let count = |rank: usize, end: bool| -> usize {
        g.ranks[rank]
            .iter()
            .filter(|&&n| n < real)
            .map(|&n| {
                g.groups[n]
                    .iter()
                    .filter(|&&group| {
                        span[group]
                            .is_some_and(|(lo, hi)| if end { hi == rank } else { lo == rank })
                    })
                    .count()
            })
            .max()
            .unwrap_or(0)
    };
    let heights: Vec<f64> = g
        .ranks
        .iter()
        .map(|rank| {
            rank.iter()
                .filter(|&&n| n < real)
                .map(|&n| graph.nodes[n].height)
                .fold(0.0, f64::max)
        })
        .collect();
    let mut y = vec![0.0f64; g.ranks.len()];
    let mut at = MARGIN;
    for r in 0..g.ranks.len() {
        at += count(r, false) as f64 * (PAD + TITLE);
        if r > 0 {
            at += RANK_GAP + count(r - 1, true) as f64 * PAD;
        }
        y[r] = at + heights[r] / 2.0;
        at += heights[r];
    }
    let nodes: Vec<Rect> = (0..real)
        .map(|n| Rect {
            x: x[n] - graph.nodes[n].width / 2.0,
            y: y[g.rank[n]] - graph.nodes[n].height / 2.0,
            width: graph.nodes[n].width,
            height: graph.nodes[n].height,
        })
        .collect();
    let groups = group_boxes(graph, &nodes);
    // Edges leave and enter at ports spread along the boxes, ordered by where they go.
    let ports = |node: usize, others: &[usize], outgoing: bool| -> Vec<f64> {
        let rect = nodes[node];
        let mut order: Vec<usize> = (0..others.len()).collect();
        order.sort_by(|&a, &b| x[others[a]].total_cmp(&x[others[b]]).then(a.cmp(&b)));
        let mut at = vec![0.0; others.len()];
        for (slot, &i) in order.iter().enumerate() {
            at[i] = rect.x + rect.width * (slot + 1) as f64 / (others.len() + 1) as f64;
        }
        let _ = outgoing;
        at
    };
    let mut out_ports: Vec<Vec<f64>> = vec![Vec::new(); real];
    let mut in_ports: Vec<Vec<f64>> = vec![Vec::new(); real];
    let mut firsts: Vec<Vec<usize>> = vec![Vec::new(); real];
    let mut lasts: Vec<Vec<usize>> = vec![Vec::new(); real];
    for chain in &g.chains {
        firsts[chain[0]].push(chain[1]);
        lasts[chain[chain.len() - 1]].push(chain[chain.len() - 2]);
    }
    for node in 0..real {
        out_ports[node] = ports(node, &firsts[node], true);
        in_ports[node] = ports(node, &lasts[node], false);
    }
    let mut used_out = vec![0usize; real];
    let mut used_in = vec![0usize; real];
    let edges: Vec<Vec<(f64, f64)>> = g
        .chains
        .iter()
        .map(|chain| {
            let (a, b) = (chain[0], chain[chain.len() - 1]);
            let start = (out_ports[a][used_out[a]], nodes[a].y + nodes[a].height);
            let end = (in_ports[b][used_in[b]], nodes[b].y);
            used_out[a] += 1;
            used_in[b] += 1;
            let mut path = vec![start];
            path.extend(
                chain[1..chain.len() - 1]
                    .iter()
                    .map(|&d| (x[d], y[g.rank[d]])),
            );
            path.push(end);
            path
        })
        .collect();
    // Shift everything so that the leftmost thing sits at the margin.
    let left = nodes
        .iter()
        .chain(groups.iter().filter(|r| r.width > 0.0))
        .map(|r| r.x)
        .chain(edges.iter().flatten().map(|p| p.0))
        .fold(f64::INFINITY, f64::min);
    let shift = if left.is_finite() { MARGIN - left } else { 0.0 };
    let moved = |r: &Rect| Rect {
        x: r.x + shift,
        ..*r
    };
    let nodes: Vec<Rect> = nodes.iter().map(moved).collect();
    let groups: Vec<Rect> = groups
        .iter()
        .map(|r| if r.width > 0.0 { moved(r) } else { *r })
        .collect();
    let edges: Vec<Vec<(f64, f64)>> = edges
        .into_iter()
        .map(|path| path.into_iter().map(|(px, py)| (px + shift, py)).collect())
        .collect();
    let right = nodes
        .iter()
        .chain(&groups)
        .map(|r| r.x + r.width)
        .chain(edges.iter().flatten().map(|p| p.0))
        .fold(0.0, f64::max);
    let bottom = nodes
        .iter()
        .chain(&groups)
        .map(|r| r.y + r.height)
        .fold(0.0, f64::max);
    Layout {
        nodes,
        edges,
        groups,
        width: right + MARGIN,
        height: bottom + MARGIN,
    }
}

/// Each group's box: around its nodes and the boxes of the groups inside it, with a margin and
/// room for its title. Inner groups come first, as their boxes are part of their parents'.
fn group_boxes(graph: &Graph, nodes: &[Rect]) -> Vec<Rect> {
    let mut bounds: Vec<Option<(f64, f64, f64, f64)>> = vec![None; graph.groups];
    let mut depth = vec![0usize; graph.groups];
    let mut parent: Vec<Option<usize>> = vec![None; graph.groups];
    let grow = |b: &mut Option<(f64, f64, f64, f64)>, r: (f64, f64, f64, f64)| {
        *b = Some(match *b {
            None => r,
            Some(o) => (o.0.min(r.0), o.1.min(r.1), o.2.max(r.2), o.3.max(r.3)),
        });
    };
    for (node, rect) in graph.nodes.iter().zip(nodes) {
        if let Some(&inner) = node.groups.last() {
            grow(
                &mut bounds[inner],
                (rect.x, rect.y, rect.x + rect.width, rect.y + rect.height),
            );
        }
        for (level, pair) in node.groups.windows(2).enumerate() {
            parent[pair[1]] = Some(pair[0]);
            depth[pair[1]] = level + 1;
        }
    }
    let mut deepest_first: Vec<usize> = (0..graph.groups).collect();
    deepest_first.sort_by_key(|&g| (std::cmp::Reverse(depth[g]), g));
    let mut boxes = vec![Rect::default(); graph.groups];
    for group in deepest_first {
        let Some((l, t, r, b)) = bounds[group] else {
            continue;
        };
        let (l, t, r, b) = (l - PAD, t - PAD - TITLE, r + PAD, b + PAD);
        boxes[group] = Rect {
            x: l,
            y: t,
            width: r - l,
            height: b - t,
        };
        if let Some(up) = parent[group] {
            grow(&mut bounds[up], (l, t, r, b));
        }
    }
    boxes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(groups: &[usize]) -> Node {
        Node {
            width: 40.0,
            height: 20.0,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn a_chain_is_a_straight_column() {
        let graph = Graph {
            nodes: vec![node(&[]), node(&[]), node(&[])],
            edges: vec![(0, 1), (1, 2)],
            groups: 0,
        };
        let layout = layout(&graph);
        let xs: Vec<f64> = layout.nodes.iter().map(|r| r.x).collect();
        assert_eq!(xs, vec![MARGIN; 3]);
        assert!(layout.nodes[0].y < layout.nodes[1].y && layout.nodes[1].y < layout.nodes[2].y);
    }

    #[test]
    fn a_skip_connection_goes_around_through_a_dummy() {
        // 0 → 1 → 2 → 3 and 0 → 3: the long edge passes ranks 1 and 2 beside the chain.
        let graph = Graph {
            nodes: vec![node(&[]), node(&[0]), node(&[0]), node(&[])],
            edges: vec![(0, 1), (1, 2), (2, 3), (0, 3)],
            groups: 1,
        };
        assert_eq!(size(&graph), 6);
        let layout = layout(&graph);
        let skip = &layout.edges[3];
        assert_eq!(skip.len(), 4, "two dummies: {skip:?}");
        // The dummies sit beside the group's box, not in it.
        let group = layout.groups[0];
        for &(px, _) in &skip[1..3] {
            assert!(
                px < group.x || px > group.x + group.width,
                "{px} in {group:?}"
            );
        }
        // The box holds its nodes with a margin and a title.
        for n in &layout.nodes[1..3] {
            assert!(group.x <= n.x - PAD && n.x + n.width + PAD <= group.x + group.width);
            assert!(group.y + PAD + TITLE <= n.y + 1e-9);
        }
    }

    #[test]
    fn ordering_removes_avoidable_crossings() {
        // 0 → {1, 2}; 1 → 4, 2 → 3: the second rank is reordered to cross nothing.
        let graph = Graph {
            nodes: (0..5).map(|_| node(&[])).collect(),
            edges: vec![(0, 1), (0, 2), (2, 3), (1, 4)],
            groups: 0,
        };
        let mut ranked = rank_graph(&graph);
        order(&mut ranked);
        let mut position = vec![0; ranked.rank.len()];
        for rank in &ranked.ranks {
            for (i, &n) in rank.iter().enumerate() {
                position[n] = i;
            }
        }
        assert_eq!(crossings(&ranked, &position), 0);
    }

    #[test]
    fn closest_ordered_keeps_order_and_gaps() {
        assert_eq!(closest_ordered(&[0.0, 0.0], &[10.0]), vec![-5.0, 5.0]);
        assert_eq!(closest_ordered(&[0.0, 50.0], &[10.0]), vec![0.0, 50.0]);
        assert_eq!(
            closest_ordered(&[30.0, 0.0, 100.0], &[10.0, 10.0]),
            vec![10.0, 20.0, 100.0]
        );
    }
}
