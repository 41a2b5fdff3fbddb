//! No two modules of a crate import each other, directly or around a loop: the layering of
//! `../shared/LAYOUT.md` as a check over every path in the source (`use` trees and paths in
//! code), resolved to the module file that defines it. Test-only code (`#[cfg(test)]`) is left out,
//! and so are a module's paths to its own ancestors (`super::X`, `crate::Error`), which every
//! child has by construction. Paths inside macro invocations are not seen.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use syn::visit::Visit;

/// A module's path from its crate root, e.g. `["domain", "live", "fanout"]`.
type ModPath = Vec<String>;

/// The crate roots checked (the `veza` binary's `main.rs` only calls the library).
const ROOTS: &[&str] = &[
    "media-core/src/lib.rs",
    "storage/src/lib.rs",
    "control-plane/src/lib.rs",
];

/// Loops still to break (issue 21), each as the check prints it. The list only shrinks: a loop
/// not listed fails the test, and so does a listed loop that is gone (remove it here).
const KNOWN: &[&str] = &[];

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every module file under a crate root, by module path (`foo.rs` and `foo/mod.rs` are `foo`).
fn module_files(root: &Path) -> BTreeMap<ModPath, PathBuf> {
    let dir = root.parent().expect("a root file has a directory");
    let mut files = BTreeMap::from([(Vec::new(), root.to_path_buf())]);
    let mut stack = vec![(dir.to_path_buf(), Vec::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("source directory").flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut module = prefix.clone();
            if path.is_dir() {
                module.push(name);
                stack.push((path, module));
            } else if let Some(stem) = name.strip_suffix(".rs") {
                if matches!(stem, "lib" | "main") && prefix.is_empty() {
                    continue;
                }
                if stem != "mod" {
                    module.push(stem.to_string());
                }
                files.insert(module, path);
            }
        }
    }
    files
}

/// Collects the modules a file's paths point into.
struct Refs<'a> {
    modules: &'a BTreeSet<ModPath>,
    /// The module being read: the file's module, then any inline `mod` inside it.
    here: ModPath,
    found: BTreeSet<ModPath>,
}

impl Refs<'_> {
    /// Resolves a path's segments to the deepest known module they name, if inside the crate.
    fn resolve(&mut self, segments: &[String]) {
        let Some(first) = segments.first() else {
            return;
        };
        let (mut base, rest) = match first.as_str() {
            "crate" => (Vec::new(), &segments[1..]),
            "self" => (self.here.clone(), &segments[1..]),
            "super" => {
                let mut base = self.here.clone();
                let mut rest = segments;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
                (base, rest)
            }
            _ => {
                let mut child = self.here.clone();
                child.push(first.clone());
                if !self.modules.contains(&child) {
                    return; // another crate, a prelude name or a local item
                }
                (self.here.clone(), segments)
            }
        };
        let mut target = base.clone();
        for segment in rest {
            base.push(segment.clone());
            if self.modules.contains(&base) {
                target = base.clone();
            } else {
                break;
            }
        }
        self.found.insert(target);
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.leaf(prefix, &n.ident),
            syn::UseTree::Rename(r) => self.leaf(prefix, &r.ident),
            syn::UseTree::Glob(_) => self.resolve(&prefix.clone()),
            syn::UseTree::Group(g) => {
                for tree in &g.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }

    fn leaf(&mut self, prefix: &[String], ident: &syn::Ident) {
        let mut path = prefix.to_vec();
        if ident != "self" {
            path.push(ident.to_string());
        }
        self.resolve(&path);
    }
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

impl<'ast> Visit<'ast> for Refs<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if !is_test_only(attrs) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if m.content.is_some() {
            self.here.push(m.ident.to_string());
            syn::visit::visit_item_mod(self, m);
            self.here.pop();
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if segments.len() > 1 {
            self.resolve(&segments);
        }
        syn::visit::visit_path(self, p);
    }
}

/// Edges between modules of one crate, without edges to a module's own ancestors.
fn edges(files: &BTreeMap<ModPath, PathBuf>) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let modules: BTreeSet<ModPath> = files.keys().cloned().collect();
    files
        .iter()
        .map(|(module, path)| {
            let text = std::fs::read_to_string(path).expect("readable source");
            let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let mut refs = Refs {
                modules: &modules,
                here: module.clone(),
                found: BTreeSet::new(),
            };
            refs.visit_file(&ast);
            refs.found.retain(|t| !module.starts_with(t));
            (module.clone(), refs.found)
        })
        .collect()
}

/// The strongly connected components with more than one module.
fn loops(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    let mut g = petgraph::graph::DiGraph::<&ModPath, ()>::new();
    let nodes: BTreeMap<&ModPath, _> = graph.keys().map(|m| (m, g.add_node(m))).collect();
    for (from, targets) in graph {
        for to in targets.iter().filter_map(|t| nodes.get(t)) {
            g.add_edge(nodes[from], *to, ());
        }
    }
    petgraph::algo::tarjan_scc(&g)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut modules: Vec<ModPath> = c.iter().map(|n| g[*n].clone()).collect();
            modules.sort();
            modules
        })
        .collect()
}

fn describe(root: &str, component: &[ModPath]) -> String {
    let names: Vec<String> = component.iter().map(|m| m.join("::")).collect();
    format!("{root}: {}", names.join(" <-> "))
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let mut found = Vec::new();
    for root in ROOTS {
        let files = module_files(&workspace().join(root));
        assert!(files.len() > 1, "{root}: no modules found");
        for component in loops(&edges(&files)) {
            found.push(describe(root, &component));
        }
    }
    let new: Vec<&String> = found
        .iter()
        .filter(|l| !KNOWN.contains(&l.as_str()))
        .collect();
    let gone: Vec<&&str> = KNOWN
        .iter()
        .filter(|k| !found.iter().any(|l| l == *k))
        .collect();
    assert!(
        new.is_empty(),
        "module loops (break them by moving the shared type down a layer):\n{}",
        new.iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        gone.is_empty(),
        "loops broken: remove them from KNOWN: {gone:?}"
    );
}

#[test]
fn the_check_sees_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("lib.rs", "mod a; mod b; mod c; pub use a::A;");
    write("a.rs", "use crate::b::B; pub struct A(B);");
    write("b.rs", "pub struct B; fn f() -> super::c::C { todo!() }");
    write("c.rs", "pub struct C(crate::a::A);");
    let files = module_files(&dir.path().join("lib.rs"));
    let found = loops(&edges(&files));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(describe("lib.rs", &found[0]), "lib.rs: a <-> b <-> c");
}
