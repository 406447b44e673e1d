// Package build holds the staging script's tests: tools/build/stage.sh and
// the advisory list it reads (tools/build/advisories.txt).
package build

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// fakeRoot is a copy of the script and its list in a tree whose staged
// release is version (only constants/constants.go, which is what the
// advisory check reads).
func fakeRoot(t *testing.T, version string) string {
	t.Helper()
	root := t.TempDir()
	for _, f := range []string{"stage.sh", "advisories.txt"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(root, "tools", "build", f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if version != "" {
		constants := filepath.Join(root, "build", "upstream", "constants", "constants.go")
		if err := os.MkdirAll(filepath.Dir(constants), 0o755); err != nil {
			t.Fatal(err)
		}
		src := "package constants\n\nconst (\n\tVERSION = \"" + version + "\"\n)\n"
		if err := os.WriteFile(constants, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func stage(t *testing.T, root string, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(root, "tools", "build", "stage.sh"), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func TestAdvisoryLine(t *testing.T) {
	for _, tc := range []struct {
		version string
		want    string // "" for no line at all
	}{
		// Every published advisory hits the pinned release.
		{"0.75.2", "netwatch: Velociraptor 0.75.2 has 32 published advisories (28 server, 3 client, 1 analyst): see docs/SECURITY.md"},
		// A branch's own fix counts: 0.75.9 has the 0.75 fixes, not the
		// later branches' ones.
		{"0.75.9", "netwatch: Velociraptor 0.75.9 has 27 published advisories (23 server, 3 client, 1 analyst): see docs/SECURITY.md"},
		{"0.76.7", "netwatch: Velociraptor 0.76.7 has 4 published advisories (3 server, 1 client): see docs/SECURITY.md"},
		{"0.77.2", "netwatch: Velociraptor 0.77.2 has 4 published advisories (3 server, 1 client): see docs/SECURITY.md"},
		{"0.77.1-rc1", "netwatch: Velociraptor 0.77.1-rc1 has 24 published advisories (22 server, 2 client): see docs/SECURITY.md"},
		{"0.77.3", ""},
		{"0.78.0", ""},
		// Nothing staged: nothing to say.
		{"", ""},
	} {
		out, err := stage(t, fakeRoot(t, tc.version), nil, "advisories")
		if err != nil {
			t.Fatalf("%s: %v: %s", tc.version, err, out)
		}
		if out != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.version, out, tc.want)
		}
	}
}

// The script refuses what it cannot stage, naming it, before touching
// anything staged.
func TestRefusals(t *testing.T) {
	notCheckout := t.TempDir()
	if err := os.WriteFile(filepath.Join(notCheckout, "go.mod"), []byte("module example.com/other\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"UPSTREAM_SRC=" + notCheckout}, "UPSTREAM_SRC=" + notCheckout + " is not a Velociraptor checkout: its go.mod declares example.com/other"},
		{[]string{"UPSTREAM_SRC=/nonexistent/velociraptor"}, "UPSTREAM_SRC=/nonexistent/velociraptor: no such directory"},
		{[]string{"VELOCIRAPTOR_VERSION=latest"}, "VELOCIRAPTOR_VERSION=latest is not a release version"},
		{[]string{"VELOCIRAPTOR_VERSION=v0.77.2", "UPSTREAM_SRC=" + notCheckout}, "set one of VELOCIRAPTOR_VERSION"},
	} {
		root := fakeRoot(t, "0.75.2")
		out, err := stage(t, root, tc.env, "upstream")
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%v: err %v, output %q; want a refusal containing %q", tc.env, err, out, tc.want)
		}
		if _, err := os.Stat(filepath.Join(root, "build", "upstream", "constants", "constants.go")); err != nil {
			t.Errorf("%v: the staged tree was touched: %v", tc.env, err)
		}
	}
}

// Every advisory of the list has a well-formed line and a row in
// docs/SECURITY.md, and the page lists no advisory the list lacks.
func TestAdvisoriesDocumented(t *testing.T) {
	f, err := os.Open("advisories.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	line := regexp.MustCompile(`^(CVE-\d{4}-\d+)\s+(\d+\.\d+\.\d+(?:,\d+\.\d+\.\d+)*)\s+(server|client|analyst)\s+\S`)
	listed := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			continue
		}
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("malformed line: %q", l)
			continue
		}
		listed[m[1]] = true
	}
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "SECURITY.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\| (CVE-\d{4}-\d+) \|`).FindAllStringSubmatch(string(doc), -1) {
		rows[m[1]] = true
	}
	for id := range listed {
		if !rows[id] {
			t.Errorf("%s is in advisories.txt but has no row in docs/SECURITY.md", id)
		}
	}
	for id := range rows {
		if !listed[id] {
			t.Errorf("%s has a row in docs/SECURITY.md but is not in advisories.txt", id)
		}
	}
}
