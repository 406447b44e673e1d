module github.com/netwatch-dfir/netwatch

go 1.26

require www.velocidex.com/golang/velociraptor v0.75.2

require (
	github.com/shirou/gopsutil/v4 v4.25.1 // indirect
	golang.org/x/sys v0.33.0 // indirect
)

// Repeated from upstream's go.mod: replace directives of a dependency are
// not inherited, and Velociraptor's markdown rendering needs this fork.
replace github.com/russross/blackfriday/v2 => github.com/Velocidex/blackfriday/v2 v2.0.2-0.20200811050547-4f26a09e2b3b
