// Package policy holds no code: its tests check rules that hold for the
// whole project rather than for one package.
package policy
