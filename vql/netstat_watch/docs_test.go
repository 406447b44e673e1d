package netstat_watch

import (
	"testing"

	"www.velocidex.com/golang/velociraptor/acls"

	"github.com/netwatch-dfir/netwatch/internal/testutil"
)

// The GUI's VQL help reads docs/references/vql.yaml, not the args struct, so
// our entry there must say exactly what the struct tags say.
func TestDocsMatchArgs(t *testing.T) {
	testutil.CheckVQLDocs(t, "../../docs/vql/netstat_watch.yaml", pluginName,
		acls.MACHINE_STATE.String(), NetstatWatchArgs{})
}
