//! The class-source plugin through the real loader and the real binary:
//! byte-exact round trips of realistic classes (`put`/`get` and
//! `Host::save`/`load`), one-line CLI refusals, proof that nothing stored is
//! ever executed (a marker file never appears; the library imports no
//! process-spawning symbol and links no libpython), and Python rebuilding
//! the class from what `get` and `inspect --json` return.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use stowage::{ClassSource, Value};
use stowage_tests::{artifacts, run_python, StowageCmd, TestDir};

/// Realistic classes as `inspect.getsource` returns them: `(file name,
/// qualname, source)`.
const CORPUS: &[(&str, &str, &str)] = &[
    ("one_line.py", "A", "class A: pass"),
    (
        "dataclass.py",
        "geometry.Point",
        "@dataclass(frozen=True)\nclass Point:\n    \"\"\"A point; this class is immutable.\"\"\"\n\n    x: float\n    y: float = 0.0\n\n    def norm(self) -> float:\n        return (self.x ** 2 + self.y ** 2) ** 0.5\n",
    ),
    (
        "decorators.py",
        "Registry",
        "# registered at import time\n@register(\n    name=\"registry\",  # a comment inside the call\n    tags=[\"a\", 'b'],\n)\n@functools.total_ordering\nclass Registry(Base, metaclass=Meta):\n    items: dict = {}\n",
    ),
    (
        "docstrings.py",
        "Parser",
        "class Parser:\n    '''Parses text.\n\nclass NotReal:\n    pass\nimport os\n    '''\n    PATTERN = r\"class \\w+\\(\"  # class in a raw string\n\n    def parse(self, text):\n        \"\"\"Returns 'class' tokens.\"\"\"\n        return [w for w in text.split() if w == \"class\"]\n",
    ),
    (
        "tabs.py",
        "Tabbed",
        "class Tabbed:\n\tdef method(self):\n\t\tif True:\n\t\t\treturn 42\n",
    ),
    (
        "crlf.py",
        "Windows",
        "class Windows:\r\n    \"\"\"Saved on Windows.\"\"\"\r\n\r\n    def hello(self):\r\n        return 'hi'\r\n",
    ),
    (
        "continuations.py",
        "Long",
        "class Long:\n    total = 1 + \\\n        2 + \\\n        3\n    names = (\n        'a',\n'b')\n    text = 'one \\\ntwo'\n",
    ),
    (
        "generic.py",
        "Box",
        "class Box[T]:\n    def __init__(self, item: T) -> None:\n        self.item = item\n\n    def get(self) -> T:\n        return self.item\n",
    ),
    (
        "nested.py",
        "Outer",
        "class Outer:\n    class Inner:\n        class Deepest:\n            value = 3\n\n    def make(self):\n        return self.Inner.Deepest()\n",
    ),
    (
        "asyncs.py",
        "Client",
        "class Client:\n    async def fetch(self, session):\n        async with session.get('/') as response:\n            return await response.text()\n\n    async def __aenter__(self):\n        return self\n",
    ),
    (
        "fstrings.py",
        "Report",
        "class Report:\n    def render(self, d, w=10):\n        return f\"{d[\"name\"]:>{w}} {{literal}} {d['n']!r}\"\n",
    ),
];

fn write(dir: &TestDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.root.join(name);
    fs::write(&path, bytes).expect("write a test file");
    path
}

fn class_dir(name: &str) -> TestDir {
    let dir = TestDir::new(name);
    dir.install("stowage-class-source", "stowage_class_source");
    dir
}

fn json(text: &str) -> serde_json::Value {
    match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) => panic!("not JSON ({error}):\n{text}"),
    }
}

#[test]
fn realistic_classes_round_trip_byte_exact_through_put_and_get() {
    let dir = class_dir("class-source-put-get");
    for (i, (file, qualname, source)) in CORPUS.iter().enumerate() {
        let path = write(&dir, file, source.as_bytes());
        let name = format!("class{i}");
        let stored = StowageCmd::new(
            &dir,
            &[
                "put",
                &name,
                path.to_str().expect("utf-8"),
                "--qualname",
                qualname,
            ],
        )
        .ok();
        assert!(
            stored.contains("class_source, python-class-source v1")
                && stored.contains("with class-source"),
            "{file}: {stored}"
        );
        let out = dir.root.join(format!("out{i}.py"));
        StowageCmd::new(&dir, &["get", &name, "-o", out.to_str().expect("utf-8")]).ok();
        assert_eq!(
            fs::read(&out).expect("get wrote"),
            source.as_bytes(),
            "{file}"
        );
        let stdout = StowageCmd::new(&dir, &["get", &name]).ok();
        assert_eq!(stdout, *source, "{file}");
        let record = json(&StowageCmd::new(&dir, &["inspect", &name, "--json"]).ok());
        let info = &record["serializer_info"];
        assert_eq!(info["qualname"], *qualname, "{file}");
        assert_eq!(info["size"], source.len().to_string(), "{file}");
    }
}

#[test]
fn the_qualname_defaults_to_the_class_name() {
    let dir = class_dir("class-source-default-qualname");
    let path = write(&dir, "point.py", b"@dataclass\nclass Point:\n    x: int\n");
    StowageCmd::new(&dir, &["put", "p", path.to_str().expect("utf-8")]).ok();
    let record = json(&StowageCmd::new(&dir, &["inspect", "p", "--json"]).ok());
    assert_eq!(record["serializer_info"]["qualname"], "Point");
    assert_eq!(record["serializer_info"]["lines"], "3");
    assert_eq!(record["obj_type"], "class_source");
    assert_eq!(record["encoding"], "python-class-source");
}

#[test]
fn values_round_trip_through_host_save_and_load() {
    let dir = class_dir("class-source-save-load");
    let host = dir.host();
    for (i, (_, qualname, source)) in CORPUS.iter().enumerate() {
        let value = Value::ClassSource(ClassSource {
            qualname: (*qualname).to_owned(),
            module: (i % 2 == 0).then(|| "__main__".to_owned()),
            source: (*source).to_owned(),
        });
        let name = format!("value{i}");
        let saved = match host.save(&name, &value, &[]) {
            Ok(saved) => saved,
            Err(error) => panic!("{qualname}: {error}"),
        };
        assert_eq!(saved.record.meta.serializer, "class-source");
        let loaded = match host.load(&name) {
            Ok(loaded) => loaded,
            Err(error) => panic!("{qualname}: {error}"),
        };
        assert_eq!(loaded.value, value, "{qualname}");
    }
}

#[test]
fn refusals_are_one_line_errors_exiting_1() {
    let dir = class_dir("class-source-refusals");
    let path = write(&dir, "module.py", b"import os\n\nclass A:\n    pass\n");
    StowageCmd::new(&dir, &["put", "m", path.to_str().expect("utf-8")]).fails(
        1,
        "error: cannot store m: class-source: line 1: the first statement is `import`, not a \
         class; class-source stores one class definition as inspect.getsource returns it",
    );
    let path = write(&dir, "a.py", b"class A: pass");
    StowageCmd::new(
        &dir,
        &[
            "put",
            "a",
            path.to_str().expect("utf-8"),
            "--qualname",
            "m.B",
        ],
    )
    .fails(
        1,
        "error: cannot store a: class-source: class is named `A` but the qualname `m.B` ends \
         in `B`",
    );
    let value = Value::ClassSource(ClassSource {
        qualname: "A".to_owned(),
        module: None,
        source: "from x import y\nclass A: pass".to_owned(),
    });
    let error = match dir.host().save("v", &value, &[]) {
        Ok(_) => panic!("a module was stored as a class"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("the first statement is `from`, not a class"),
        "{error}"
    );
    StowageCmd::new(&dir, &["get", "m"]).fails(1, "error: no artifact named m");
}

#[test]
fn show_renders_qualname_module_lines_and_first_line() {
    let dir = class_dir("class-source-show");
    let path = write(
        &dir,
        "point.py",
        b"\n@dataclass\nclass Point:\n    x: int\n    y: int\n",
    );
    StowageCmd::new(
        &dir,
        &[
            "put",
            "p",
            path.to_str().expect("utf-8"),
            "--qualname",
            "geo.Point",
            "--opt",
            "module=shapes",
        ],
    )
    .ok();
    assert_eq!(
        StowageCmd::new(&dir, &["show", "p"]).ok(),
        "python class geo.Point in module shapes: 5 lines, 47 bytes\n  @dataclass\n"
    );
}

/// A class whose body, if anything ran it, would create `marker` three
/// different ways.
fn booby_trapped(marker: &Path) -> String {
    let marker = marker.display();
    format!(
        "@lambda cls: (open('{marker}.decorator', 'w').close(), cls)[1]\nclass Trap:\n    \
         open('{marker}', 'w').write('executed')\n    \
         __import__('os').system('touch {marker}.system')\n    \
         x = __import__('subprocess').run(['touch', '{marker}.subprocess'])\n"
    )
}

#[test]
fn stored_sources_are_never_executed() {
    let dir = class_dir("class-source-never-executed");
    let marker = dir.root.join("EXECUTED");
    // stowage only reads the text, so it stores the trap like any other
    // class; a control run at the end shows the trap is real.
    let source = booby_trapped(&marker);
    let path = write(&dir, "trap.py", source.as_bytes());
    let file = path.to_str().expect("utf-8");
    let out = dir.root.join("out.py");
    StowageCmd::new(&dir, &["put", "trap", file]).ok();
    StowageCmd::new(&dir, &["get", "trap", "-o", out.to_str().expect("utf-8")]).ok();
    StowageCmd::new(&dir, &["get", "trap"]).ok();
    StowageCmd::new(&dir, &["show", "trap"]).ok();
    StowageCmd::new(&dir, &["inspect", "trap"]).ok();
    StowageCmd::new(&dir, &["inspect", "trap", "--json"]).ok();
    StowageCmd::new(&dir, &["verify"]).ok();
    let host = dir.host();
    let value = Value::ClassSource(ClassSource {
        qualname: "Trap".to_owned(),
        module: Some("__main__".to_owned()),
        source: source.clone(),
    });
    host.save("trap-value", &value, &[]).expect("saves");
    let loaded = host.load("trap-value").expect("loads");
    assert_eq!(loaded.value, value);
    assert_eq!(fs::read_to_string(&out).expect("get wrote"), source);
    let leftovers: Vec<String> = fs::read_dir(&dir.root)
        .expect("list the test dir")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("EXECUTED"))
        .collect();
    assert!(leftovers.is_empty(), "the source ran: {leftovers:?}");
    // Control: the trap does fire when a consumer runs what `get` returned.
    run_python(
        "import sys; exec(open(sys.argv[1]).read(), {})",
        &[out.as_path()],
    );
    for suffix in ["", ".decorator", ".system", ".subprocess"] {
        let fired = dir.root.join(format!("EXECUTED{suffix}"));
        assert!(
            fired.exists(),
            "the control run did not create {}",
            fired.display()
        );
    }
}

/// Runs a binutils tool on `lib` and returns its stdout.
fn binutils(tool: &str, args: &[&str], lib: &Path) -> String {
    let output = Command::new(tool)
        .args(args)
        .arg(lib)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} (binutils): {e}"));
    assert!(output.status.success(), "{tool} failed: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Whether an imported symbol name (`execve@GLIBC_2.2.5`) spawns processes.
fn spawns(symbol: &str) -> bool {
    let name = symbol.split('@').next().unwrap_or(symbol);
    matches!(
        name,
        "execve"
            | "execv"
            | "execvp"
            | "execvpe"
            | "execl"
            | "execlp"
            | "execle"
            | "fexecve"
            | "fork"
            | "vfork"
            | "clone"
            | "clone3"
            | "system"
            | "popen"
            | "wordexp"
    ) || name.starts_with("posix_spawn")
        || name.starts_with("Py")
        || name.starts_with("_Py")
}

#[test]
fn the_library_imports_no_process_spawning_symbol_and_links_no_python() {
    let lib = artifacts().lib("stowage-class-source");
    let undefined = binutils("nm", &["-D", "--undefined-only"], lib);
    // `nm` lines are `                 U symbol[@version]`.
    let imported: Vec<&str> = undefined
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .collect();
    assert!(
        imported.iter().any(|s| s.starts_with("malloc")),
        "the parse found no imports at all:\n{undefined}"
    );
    let spawning: Vec<&&str> = imported.iter().filter(|s| spawns(s)).collect();
    assert!(
        spawning.is_empty(),
        "process-spawning imports: {spawning:?}"
    );
    let dynamic = binutils("readelf", &["-d", "-W"], lib);
    // `0x…1 (NEEDED)  Shared library: [libc.so.6]`
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| line.split('[').nth(1))
        .map(|rest| rest.trim_end_matches(']'))
        .collect();
    assert!(
        needed.iter().any(|n| n.starts_with("libc.so")),
        "the parse found no NEEDED entries:\n{dynamic}"
    );
    assert!(
        needed.iter().all(|n| !n.contains("python")),
        "links Python: {needed:?}"
    );
}

#[test]
fn python_rebuilds_the_class_from_get_and_inspect_json() {
    let dir = class_dir("class-source-python");
    let source = "@dataclass(frozen=True)\r\nclass Money:\r\n    \"\"\"An amount; class-level docs.\"\"\"\r\n    amount: int\r\n    currency: str = \"EUR\"\r\n\r\n    def __add__(self, other: \"Money\") -> \"Money\":\r\n        assert self.currency == other.currency\r\n        return Money(self.amount + other.amount, self.currency)\r\n\r\n    def __str__(self):\r\n        return f\"{self.amount / 100:.2f} {self.currency}\"\r\n";
    let path = write(&dir, "money.py", source.as_bytes());
    StowageCmd::new(
        &dir,
        &[
            "put",
            "money",
            path.to_str().expect("utf-8"),
            "--qualname",
            "Money",
            "--opt",
            "module=__main__",
        ],
    )
    .ok();
    let out = dir.root.join("rebuilt.py");
    StowageCmd::new(&dir, &["get", "money", "-o", out.to_str().expect("utf-8")]).ok();
    let meta = write(
        &dir,
        "money.json",
        StowageCmd::new(&dir, &["inspect", "money", "--json"])
            .ok()
            .as_bytes(),
    );
    let script = r#"
import json, sys
from dataclasses import dataclass
source = open(sys.argv[1], encoding="utf-8", newline="").read()
info = json.load(open(sys.argv[2]))["serializer_info"]
namespace = {"dataclass": dataclass, "__name__": info.get("module", "__main__")}
exec(compile(source, sys.argv[1], "exec"), namespace)
cls = namespace[info["qualname"].rsplit(".", 1)[-1]]
cls.__qualname__ = info["qualname"]
total = cls(1250) + cls(199)
print(cls.__qualname__, cls.__module__, total, total == cls(1449), cls.__doc__)
"#;
    let printed = run_python(script, &[&out, &meta]);
    assert_eq!(
        printed,
        "Money __main__ 14.49 EUR True An amount; class-level docs.\n"
    );
}

#[test]
fn python_agrees_every_corpus_source_is_one_class_definition() {
    let dir = TestDir::new("class-source-python-ast");
    // Python 3.12 syntax (PEP 695 generics, PEP 701 f-strings) in these.
    let needs_312 = ["generic.py", "fstrings.py"];
    let entries: Vec<serde_json::Value> = CORPUS
        .iter()
        .map(|(file, qualname, source)| {
            let path = write(&dir, file, source.as_bytes());
            serde_json::json!({
                "path": path,
                "name": qualname.rsplit('.').next(),
                "needs_312": needs_312.contains(file),
            })
        })
        .collect();
    let manifest = write(
        &dir,
        "corpus.json",
        serde_json::Value::Array(entries).to_string().as_bytes(),
    );
    let script = r#"
import ast, json, sys
for entry in json.load(open(sys.argv[1])):
    source = open(entry["path"], encoding="utf-8", newline="").read()
    if entry["needs_312"] and sys.version_info < (3, 12):
        try:
            ast.parse(source)
        except SyntaxError:
            continue
        raise SystemExit(f"{entry['path']}: expected 3.12-only syntax")
    body = ast.parse(source).body
    assert len(body) == 1 and isinstance(body[0], ast.ClassDef), entry
    assert body[0].name == entry["name"], entry
print("ok")
"#;
    assert_eq!(run_python(script, &[&manifest]), "ok\n");
}
