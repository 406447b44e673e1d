package testutil

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v2"
)

// CheckVQLDocs checks that the VQL reference entry in path (one of our
// docs/vql/*.yaml, which the GUI's VQL help reads instead of the args
// struct) documents exactly the fields of args, with the same texts, and
// the permission the plugin or function checks.
func CheckVQLDocs(t *testing.T, path, name, permission string, args any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var entries []struct {
		Name string
		Args []struct {
			Name        string
			Type        string
			Description string
		}
		Metadata map[string]string
	}
	if err := yaml.Unmarshal(data, &entries); err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name != name {
		t.Fatalf("%s: want one entry for %s, got %+v", path, name, entries)
	}
	if got := entries[0].Metadata["permissions"]; got != permission {
		t.Errorf("%s: permissions %q, want %q", path, got, permission)
	}

	want := map[string]string{}
	typ := reflect.TypeOf(args)
	for i := 0; i < typ.NumField(); i++ {
		tag := typ.Field(i).Tag.Get("vfilter")
		var field, doc string
		for _, part := range strings.SplitN(tag, ",", 3) {
			if v, ok := strings.CutPrefix(part, "field="); ok {
				field = v
			}
			if v, ok := strings.CutPrefix(part, "doc="); ok {
				doc = v
			}
		}
		want[field] = doc
	}
	got := map[string]string{}
	for _, a := range entries[0].Args {
		got[a.Name] = a.Description
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: args differ from %s:\n got %q\nwant %q", path, typ.Name(), got, want)
	}
}
