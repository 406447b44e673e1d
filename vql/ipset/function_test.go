package ipset

import (
	"testing"

	"github.com/netwatch-dfir/netwatch/internal/testutil"
)

func TestFunctionDocs(t *testing.T) {
	testutil.CheckVQLDocs(t, "../../docs/vql/netwatch_network.yaml", functionName, "", NetworkArgs{})
}
