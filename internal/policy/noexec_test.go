package policy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v2"
)

// What runs on endpoints and on the server never starts a program: a
// monitoring agent that shells out can be made to run something else
// (PATH, a planted lsof), costs a fork per poll, and is what EDRs flag.

// forbiddenImports start programs.
var forbiddenImports = map[string]string{
	"os/exec":                           "starts programs",
	"github.com/shirou/gopsutil/v4/net": "runs lsof or netstat for connections outside Linux and Windows",
}

// forbiddenCalls start programs without os/exec.
var forbiddenCalls = map[string]bool{
	"syscall.Exec": true, "syscall.ForkExec": true, "syscall.StartProcess": true,
	"os.StartProcess": true, "unix.Exec": true,
}

// gopsutilProcessOK are the gopsutil process methods we call: each reads
// the kernel (sysctl, libproc, Win32) on every OS we build for. Some
// others run ps (Status, Foreground on macOS and FreeBSD): a call to a
// method not listed here fails the test until it has been checked.
var gopsutilProcessOK = map[string]bool{
	"NewProcess": true, "CreateTime": true, "Ppid": true, "Name": true,
	"Exe": true, "Cmdline": true, "Uids": true, "Username": true,
}

// shipped lists the Go files compiled into the binary: vql/, not tests.
func shipped(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir("../../vql", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "testdata" {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 20 {
		t.Fatalf("only %d Go files under vql/: wrong directory?", len(files))
	}
	return files
}

func TestNoShellingOutInGo(t *testing.T) {
	fset := token.NewFileSet()
	for _, path := range shipped(t) {
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]string{} // local name -> import path
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if why, bad := forbiddenImports[p]; bad {
				t.Errorf("%s imports %s, which %s", path, p, why)
			}
			name := filepath.Base(p)
			if strings.HasPrefix(name, "v") && strings.Count(p, "/") > 2 { // .../v4
				name = filepath.Base(filepath.Dir(p))
			}
			if imp.Name != nil {
				name = imp.Name.Name
			}
			names[name] = p
		}
		usesProcess := false
		for _, p := range names {
			usesProcess = usesProcess || p == "github.com/shirou/gopsutil/v4/process"
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); ok {
				full := x.Name + "." + sel.Sel.Name
				if forbiddenCalls[full] {
					t.Errorf("%s: %s starts a program", fset.Position(call.Pos()), full)
				}
			}
			// Any method call in a file that holds gopsutil processes is
			// checked against the list (a false alarm costs one entry).
			if usesProcess && isGopsutilCall(sel) && !gopsutilProcessOK[sel.Sel.Name] {
				t.Errorf("%s: gopsutil %s() is not in the checked list (some of its methods run ps): check it does not shell out on macOS, Windows and FreeBSD, then add it",
					fset.Position(call.Pos()), sel.Sel.Name)
			}
			return true
		})
	}
}

// isGopsutilCall: process.X(...) or h.X(...) on a variable named h, the
// enricher's name for a gopsutil process handle.
func isGopsutilCall(sel *ast.SelectorExpr) bool {
	x, ok := sel.X.(*ast.Ident)
	return ok && (x.Name == "process" || x.Name == "h")
}

// VQL plugins and functions that start programs or write code to run.
var execVQL = regexp.MustCompile(`\b(execve|shell|powershell|cmd|python|bash)\s*\(`)

func TestNoShellingOutInArtifacts(t *testing.T) {
	paths, _ := filepath.Glob("../../artifacts/*.yaml")
	if len(paths) < 2 {
		t.Fatalf("artifacts not found: %v", paths)
	}
	sort.Strings(paths)
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var a struct {
			Export  string
			Sources []struct{ Query string }
			Tools   []any
		}
		if err := yaml.Unmarshal(data, &a); err != nil {
			t.Fatal(err)
		}
		vql := a.Export
		for _, s := range a.Sources {
			vql += "\n" + s.Query
		}
		if len(vql) < 200 {
			t.Fatalf("%s: no VQL read", path)
		}
		for i, line := range strings.Split(vql, "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "--") {
				continue
			}
			if m := execVQL.FindString(line); m != "" {
				t.Errorf("%s: VQL line %d calls %s: %s", path, i+1, m, strings.TrimSpace(line))
			}
		}
		if len(a.Tools) > 0 {
			t.Errorf("%s declares tools to download and run", path)
		}
	}
}

// The rule can fail: a file that shells out is caught.
func TestNoShellingOutCatchesExec(t *testing.T) {
	src := `package x
import "os/exec"
func f() { exec.Command("lsof").Run() }`
	f, err := parser.ParseFile(token.NewFileSet(), "x.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Unquote(f.Imports[0].Path.Value)
	if _, bad := forbiddenImports[p]; !bad {
		t.Error("os/exec is not forbidden")
	}
	if !execVQL.MatchString(`SELECT * FROM execve(argv=["lsof"])`) {
		t.Error("execve() in VQL is not caught")
	}
}
