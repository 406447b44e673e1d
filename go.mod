module github.com/netwatch-dfir/netwatch

go 1.26

require (
	github.com/cilium/ebpf v0.22.0
	github.com/shirou/gopsutil/v4 v4.25.1
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.43.0
	gonum.org/v1/plot v0.17.0
	www.velocidex.com/golang/velociraptor v0.75.2
)

require (
	codeberg.org/go-fonts/liberation v0.5.0 // indirect
	codeberg.org/go-latex/latex v0.2.0 // indirect
	codeberg.org/go-pdf/fpdf v0.11.1 // indirect
	git.sr.ht/~sbinet/gg v0.7.0 // indirect
	github.com/ajstarks/svgo v0.0.0-20211024235047-1546f124cd8b // indirect
	github.com/ebitengine/purego v0.8.3 // indirect
	github.com/go-ole/go-ole v1.2.6 // indirect
	github.com/golang/freetype v0.0.0-20170609003504-e2365dfdc4a0 // indirect
	github.com/lufia/plan9stats v0.0.0-20211012122336-39d0f177ccd0 // indirect
	github.com/power-devops/perfstat v0.0.0-20210106213030-5aafc221ea8c // indirect
	github.com/tklauser/go-sysconf v0.3.12 // indirect
	github.com/tklauser/numcpus v0.6.1 // indirect
	github.com/yusufpapurcu/wmi v1.2.4 // indirect
	golang.org/x/image v0.30.0 // indirect
	golang.org/x/text v0.29.0 // indirect
)

// Repeated from upstream's go.mod: replace directives of a dependency are
// not inherited, and Velociraptor's markdown rendering needs this fork.
replace github.com/russross/blackfriday/v2 => github.com/Velocidex/blackfriday/v2 v2.0.2-0.20200811050547-4f26a09e2b3b

tool github.com/cilium/ebpf/cmd/bpf2go
