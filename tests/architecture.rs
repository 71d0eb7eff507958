//! The runtime's module map is the one ARCHITECTURE.md draws.
//!
//! This test derives the import graph of `runtime/src` from its code — every `use crate::…`,
//! `use super::…` / `use self::…`, every `crate::…` path in items, types and expressions, and the
//! `crate::…` paths inside macro invocations — and checks it against the floors listed in
//! ARCHITECTURE.md (the table under "## The floors"):
//!
//! 1. every module of `runtime/src` belongs to a room (the longest room path that prefixes it);
//! 2. an import from one room to another goes strictly down: to a room on a lower floor;
//! 3. there is no import cycle between module files.
//!
//! Test code (`#[cfg(test)]` items) is not part of the map. A parent module's references to its
//! own submodules (declarations and re-exports) are containment, not imports.

use proc_macro2::{TokenStream, TokenTree};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

const ROOT: &str = "crate";

/// A module path such as `mpp::store::redis` (the crate root is `crate`).
type ModPath = String;

fn runtime_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime").join("src")
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> =
        std::fs::read_dir(dir).expect("read runtime/src").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file defines (`lib.rs` → `crate`, `a/mod.rs` → `a`, `a/b.rs` → `a::b`).
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).expect("below src").with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    if parts.is_empty() { ROOT.to_owned() } else { parts.join("::") }
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .any(|a| a.path().is_ident("cfg") && a.meta.require_list().is_ok_and(|l| l.tokens.to_string().trim() == "test"))
}

/// Collects the module paths a file names.
struct Refs<'a> {
    module: &'a str,
    out: BTreeSet<Vec<String>>,
}

impl Refs<'_> {
    /// An absolute path (segments after `crate`) from a path as written.
    fn absolute(&self, segs: &[String]) -> Option<Vec<String>> {
        let first = segs.first()?;
        let here: Vec<String> =
            if self.module == ROOT { vec![] } else { self.module.split("::").map(str::to_owned).collect() };
        match first.as_str() {
            "crate" => Some(segs[1..].to_vec()),
            "self" => Some(here.into_iter().chain(segs[1..].iter().cloned()).collect()),
            "super" => {
                let mut base = here;
                let mut rest = segs;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
                Some(base.into_iter().chain(rest.iter().cloned()).collect())
            }
            _ => None,
        }
    }

    fn add(&mut self, segs: &[String]) {
        if let Some(abs) = self.absolute(segs).filter(|abs| !abs.is_empty()) {
            self.out.insert(abs);
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) if n.ident == "self" => self.add(prefix),
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.add(prefix);
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.add(prefix);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.add(prefix),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    /// `crate :: a :: b` sequences inside macro tokens (`$crate` paths are the macro's own).
    fn tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            match &trees[i] {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id) if id == "crate" => {
                    let dollar = i > 0 && matches!(&trees[i - 1], TokenTree::Punct(p) if p.as_char() == '$');
                    let mut segs = vec!["crate".to_owned()];
                    let mut j = i + 1;
                    while j + 2 < trees.len() + 1 {
                        let colons = matches!((trees.get(j), trees.get(j + 1)), (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) if a.as_char() == ':' && b.as_char() == ':');
                        match (colons, trees.get(j + 2)) {
                            (true, Some(TokenTree::Ident(next))) => {
                                segs.push(next.to_string());
                                j += 3;
                            }
                            _ => break,
                        }
                    }
                    if !dollar && segs.len() > 1 {
                        self.add(&segs);
                    }
                    i = j.max(i + 1);
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Refs<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            syn::Item::Trait(t) => &t.attrs,
            syn::Item::Type(t) => &t.attrs,
            syn::Item::Macro(m) => &m.attrs,
            _ => &[],
        };
        if is_cfg_test(attrs) {
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segs: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if segs.first().is_some_and(|s| s == "crate" || s == "super") {
            self.add(&segs);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        self.tokens(mac.tokens.clone());
    }

    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {
        // `pub(crate)` / `pub(super)` name a scope, not an import.
    }

    fn visit_attribute(&mut self, _: &'ast syn::Attribute) {
        // `#[doc = …]` links and `#[cfg]`s are not imports.
    }
}

/// The longest module among `modules` that prefixes `path` (at least the crate root).
fn resolve(modules: &BTreeSet<ModPath>, path: &[String]) -> ModPath {
    for n in (1..=path.len()).rev() {
        let candidate = path[..n].join("::");
        if modules.contains(&candidate) {
            return candidate;
        }
    }
    ROOT.to_owned()
}

fn is_descendant(child: &str, parent: &str) -> bool {
    parent == ROOT || child.strip_prefix(parent).is_some_and(|rest| rest.starts_with("::"))
}

/// The import graph: module → the modules it imports (containment edges left out).
fn import_graph() -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let src = runtime_src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<ModPath> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).expect("read source");
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut refs = Refs { module: &module, out: BTreeSet::new() };
        if !is_cfg_test(&ast.attrs) {
            refs.visit_file(&ast);
        }
        let targets: BTreeSet<ModPath> = refs
            .out
            .iter()
            .map(|p| resolve(&modules, p))
            .filter(|t| *t != module && !is_descendant(t, &module))
            .collect();
        graph.insert(module, targets);
    }
    graph
}

/// The floors of ARCHITECTURE.md: room → floor number.
fn floors() -> BTreeMap<ModPath, u32> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md at the repository root");
    let section = doc.split("## The floors").nth(1).expect("ARCHITECTURE.md has a `## The floors` section");
    let mut rooms = BTreeMap::new();
    for line in section.lines().take_while(|l| !l.starts_with("## ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(floor) = cells.get(1).and_then(|c| c.parse::<u32>().ok()) else { continue };
        let room_cell = cells.get(2).expect("a rooms column");
        for room in room_cell.split('`').skip(1).step_by(2) {
            let room = if room == "lib" { ROOT } else { room };
            assert!(rooms.insert(room.to_owned(), floor).is_none(), "room `{room}` is listed twice in ARCHITECTURE.md");
        }
    }
    assert!(!rooms.is_empty(), "ARCHITECTURE.md's floor table lists no rooms");
    rooms
}

/// The room a module belongs to: the longest listed room that is the module or an ancestor.
fn room_of<'r>(rooms: &'r BTreeMap<ModPath, u32>, module: &str) -> Option<(&'r str, u32)> {
    rooms
        .iter()
        .filter(|(room, _)| room.as_str() == module || (room.as_str() != ROOT && is_descendant(module, room)))
        .max_by_key(|(room, _)| room.len())
        .map(|(room, floor)| (room.as_str(), *floor))
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct State<'g> {
        graph: &'g BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        found: Vec<Vec<ModPath>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(lw));
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn every_module_is_on_a_floor_and_imports_only_downward() {
    let graph = import_graph();
    let rooms = floors();
    let mut problems = Vec::new();
    for module in graph.keys() {
        if room_of(&rooms, module).is_none() {
            problems.push(format!("module `{module}` is in no room of ARCHITECTURE.md's floor table"));
        }
    }
    for (from, targets) in &graph {
        let Some((from_room, from_floor)) = room_of(&rooms, from) else { continue };
        for to in targets {
            let Some((to_room, to_floor)) = room_of(&rooms, to) else { continue };
            if from_room != to_room && to_floor >= from_floor {
                problems.push(format!(
                    "`{from}` (room `{from_room}`, floor {from_floor}) imports `{to}` (room `{to_room}`, floor {to_floor}): \
                     imports between rooms must go to a lower floor"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "the module map disagrees with ARCHITECTURE.md:\n{}", problems.join("\n"));
}

#[test]
fn no_import_cycles_between_modules() {
    let found = cycles(&import_graph());
    assert!(
        found.is_empty(),
        "import cycles between modules of runtime/src:\n{}",
        found.iter().map(|c| c.join(" <-> ")).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_checker_sees_an_upward_import_and_a_cycle() {
    // The checker itself: a graph with a known cycle and a known upward edge is flagged.
    let mut graph = BTreeMap::new();
    graph.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    graph.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    graph.insert("c".to_owned(), BTreeSet::new());
    assert_eq!(cycles(&graph), vec![vec!["a".to_owned(), "b".to_owned()]]);

    let src = "pub(crate) use crate::x402::http::RouteConfig;\nuse super::store::{self, ChannelStore};\n\
               fn f() { crate::metrics::record(); tracing::info!(x = ?crate::json::compact(1)); }\n\
               #[cfg(test)] mod tests { use crate::axum::Guard; }";
    let ast = syn::parse_file(src).expect("parses");
    let mut refs = Refs { module: "mpp::server", out: BTreeSet::new() };
    refs.visit_file(&ast);
    let seen: BTreeSet<String> = refs.out.iter().map(|p| p.join("::")).collect();
    for want in
        ["x402::http::RouteConfig", "mpp::store", "mpp::store::ChannelStore", "metrics::record", "json::compact"]
    {
        assert!(seen.contains(want), "{want} not seen in {seen:?}");
    }
    assert!(!seen.iter().any(|p| p.starts_with("axum")), "test code is not part of the map: {seen:?}");

    let modules: BTreeSet<ModPath> = ["crate", "x402", "x402::http", "mpp", "mpp::store"].map(str::to_owned).into();
    assert_eq!(resolve(&modules, &["x402".into(), "http".into(), "RouteConfig".into()]), "x402::http");
    let rooms: BTreeMap<ModPath, u32> =
        [("x402".to_owned(), 4), ("okx::sa".to_owned(), 3), ("okx".to_owned(), 5)].into();
    assert_eq!(room_of(&rooms, "okx::sa::client"), Some(("okx::sa", 3)));
    assert_eq!(room_of(&rooms, "okx::facilitator"), Some(("okx", 5)));
    assert_eq!(room_of(&rooms, "mpp::server"), None);
}

#[test]
fn the_readme_map_names_every_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let map = readme.split("## Where things are").nth(1).expect("README has a `## Where things are` section");
    let map = map.split("\n## ").next().unwrap_or(map);
    let mut missing = Vec::new();
    for krate in ["runtime/src", "macros/src", "core/src"] {
        let mut files = Vec::new();
        rust_files(&root.join(krate), &mut files);
        for file in files {
            let rel = file.strip_prefix(root).expect("below the root").to_string_lossy().replace('\\', "/");
            // Unit tests split out of a module are part of that module's entry.
            if rel.ends_with("/tests.rs") {
                continue;
            }
            if !map.contains(&format!("`{rel}`")) {
                missing.push(rel);
            }
        }
    }
    assert!(missing.is_empty(), "README's \"Where things are\" does not name:\n{}", missing.join("\n"));
}

/// The most lines a library source file may hold: a file past it holds more than one concept
/// (split-out unit tests, `*/tests.rs`, do not count).
const MAX_LIBRARY_FILE_LINES: usize = 900;

#[test]
fn no_library_file_is_over_900_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut long = Vec::new();
    for krate in ["runtime/src", "macros/src", "core/src", "src"] {
        let mut files = Vec::new();
        rust_files(&root.join(krate), &mut files);
        for file in files {
            if file.ends_with("tests.rs") {
                continue;
            }
            let lines = std::fs::read_to_string(&file).expect("source file").lines().count();
            if lines > MAX_LIBRARY_FILE_LINES {
                long.push(format!("{} ({lines} lines)", file.strip_prefix(root).expect("below the root").display()));
            }
        }
    }
    assert!(long.is_empty(), "library files over {MAX_LIBRARY_FILE_LINES} lines:\n{}", long.join("\n"));
}
