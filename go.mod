module github.com/netwatch-dfir/netwatch

go 1.26

require (
	github.com/cilium/ebpf v0.22.0
	github.com/shirou/gopsutil/v4 v4.25.1
	golang.org/x/sys v0.43.0
	www.velocidex.com/golang/velociraptor v0.75.2
)

require (
	github.com/ebitengine/purego v0.8.3 // indirect
	github.com/go-ole/go-ole v1.2.6 // indirect
	github.com/lufia/plan9stats v0.0.0-20211012122336-39d0f177ccd0 // indirect
	github.com/power-devops/perfstat v0.0.0-20210106213030-5aafc221ea8c // indirect
	github.com/tklauser/go-sysconf v0.3.12 // indirect
	github.com/tklauser/numcpus v0.6.1 // indirect
	github.com/yusufpapurcu/wmi v1.2.4 // indirect
	go.uber.org/goleak v1.3.0 // indirect
)

// Repeated from upstream's go.mod: replace directives of a dependency are
// not inherited, and Velociraptor's markdown rendering needs this fork.
replace github.com/russross/blackfriday/v2 => github.com/Velocidex/blackfriday/v2 v2.0.2-0.20200811050547-4f26a09e2b3b

tool github.com/cilium/ebpf/cmd/bpf2go
