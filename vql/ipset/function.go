package ipset

import (
	"context"
	"fmt"
	"reflect"

	"github.com/Velocidex/ordereddict"
	"www.velocidex.com/golang/velociraptor/utils"
	vql_subsystem "www.velocidex.com/golang/velociraptor/vql"
	"www.velocidex.com/golang/vfilter"
	"www.velocidex.com/golang/vfilter/arg_parser"
	"www.velocidex.com/golang/vfilter/types"
)

const functionName = "netwatch_network"

// NetworkArgs documents the function in the GUI's VQL help: keep the doc
// tags complete, docs/vql/netwatch_network.yaml is checked against them.
type NetworkArgs struct {
	IP       string      `vfilter:"required,field=ip,doc=The address to look up (IPv4, IPv6 or IPv4-mapped IPv6)."`
	Networks vfilter.Any `vfilter:"required,field=networks,doc=The networks: a list of rows (e.g. a materialized LET over a csv parameter) or of strings. Compiled once per query and list, then reused."`
	Field    string      `vfilter:"optional,field=field,doc=The column of each row holding its network, a CIDR or a bare address (default CIDR)."`
}

// compiled is one list compiled, cached in the query's root scope under
// the identity of the list.
type compiled struct {
	set  *Set
	rows []vfilter.Any
}

type NetworkFunction struct{}

// Call returns the first row of networks (in list order) whose network
// holds ip, or NULL. Entries that are not networks never match (the
// artifacts validate and log them before).
func (NetworkFunction) Call(ctx context.Context, scope vfilter.Scope,
	args *ordereddict.Dict) vfilter.Any {
	defer vql_subsystem.RegisterMonitor(ctx, functionName, args)()

	// Pure computation over the caller's own values: no permission is
	// needed beyond running VQL, like cidr_contains().
	a := &NetworkArgs{}
	if err := arg_parser.ExtractArgsWithContext(ctx, scope, args, a); err != nil {
		scope.Log("%s: Error: %v", functionName, err)
		return vfilter.Null{}
	}
	if a.Field == "" {
		a.Field = "CIDR"
	}
	c := lookupCompiled(ctx, scope, a)
	if i := c.set.Lookup(a.IP); i >= 0 {
		return c.rows[i]
	}
	return vfilter.Null{}
}

// lookupCompiled compiles a.Networks on first use in this query. A
// materialized LET hands the same object (a pointer) to every call, so
// its address identifies it; a literal list is compiled at every call.
func lookupCompiled(ctx context.Context, scope vfilter.Scope, a *NetworkArgs) *compiled {
	v := reflect.ValueOf(a.Networks)
	if v.Kind() != reflect.Pointer && v.Kind() != reflect.Slice || v.IsNil() {
		return compile(ctx, scope, a)
	}
	key := fmt.Sprintf("$netwatch_network:%x:%s", v.Pointer(), a.Field)
	if v.Kind() == reflect.Slice {
		key += fmt.Sprintf(":%d", v.Len())
	}
	root := vql_subsystem.GetRootScope(scope)
	if c, ok := vql_subsystem.CacheGet(root, key).(*compiled); ok {
		return c
	}
	c := compile(ctx, scope, a)
	vql_subsystem.CacheSet(root, key, c)
	return c
}

func compile(ctx context.Context, scope vfilter.Scope, a *NetworkArgs) *compiled {
	var rows []vfilter.Any
	switch n := a.Networks.(type) {
	case types.StoredQuery:
		for _, r := range types.Materialize(ctx, scope, n) {
			rows = append(rows, r)
		}
	default:
		v := reflect.ValueOf(a.Networks)
		if v.Kind() == reflect.Slice {
			for i := 0; i < v.Len(); i++ {
				rows = append(rows, v.Index(i).Interface())
			}
		} else if a.Networks != nil && !utils.IsNil(a.Networks) {
			rows = []vfilter.Any{a.Networks}
		}
	}
	nets := make([]string, len(rows))
	for i, r := range rows {
		if s, ok := r.(string); ok {
			nets[i] = s
			continue
		}
		if f, ok := scope.Associative(r, a.Field); ok {
			nets[i] = fmt.Sprint(f)
		}
	}
	set, _ := New(nets)
	return &compiled{set: set, rows: rows}
}

func (NetworkFunction) Info(scope vfilter.Scope, type_map *vfilter.TypeMap) *vfilter.FunctionInfo {
	return &vfilter.FunctionInfo{
		Name: functionName,
		Doc: "The first row of a list of networks (CIDR or bare addresses, IPv4 and IPv6) " +
			"holding an address, or NULL; the list is compiled once per query, so a " +
			"long IOC list costs a few map lookups per address.",
		ArgType:  type_map.AddType(scope, &NetworkArgs{}),
		Metadata: vql_subsystem.VQLMetadata().Build(),
	}
}

func init() {
	vql_subsystem.RegisterFunction(&NetworkFunction{})
}
