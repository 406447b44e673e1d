package netstat_watch

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v2"
)

// The GUI's VQL help reads docs/references/vql.yaml, not the args struct, so
// our entry there must say exactly what the struct tags say.
func TestDocsMatchArgs(t *testing.T) {
	data, err := os.ReadFile("../../docs/vql/netstat_watch.yaml")
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
	if len(entries) != 1 || entries[0].Name != pluginName {
		t.Fatalf("want one entry for %s, got %+v", pluginName, entries)
	}
	if entries[0].Metadata["permissions"] != "MACHINE_STATE" {
		t.Errorf("permissions: %q", entries[0].Metadata["permissions"])
	}

	want := map[string]string{}
	typ := reflect.TypeOf(NetstatWatchArgs{})
	for i := 0; i < typ.NumField(); i++ {
		tag := typ.Field(i).Tag.Get("vfilter")
		var name, doc string
		for _, part := range strings.SplitN(tag, ",", 3) {
			if v, ok := strings.CutPrefix(part, "field="); ok {
				name = v
			}
			if v, ok := strings.CutPrefix(part, "doc="); ok {
				doc = v
			}
		}
		want[name] = doc
	}
	got := map[string]string{}
	for _, a := range entries[0].Args {
		got[a.Name] = a.Description
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("docs/vql/netstat_watch.yaml args differ from NetstatWatchArgs:\n got %q\nwant %q", got, want)
	}
}
