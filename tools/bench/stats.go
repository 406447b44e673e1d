//go:build linux

package main

import (
	"math"
	"sort"
)

// Spread is the median and range of a few repetitions.
type Spread struct {
	Med, Min, Max float64
	N             int
}

func spread(xs []float64) Spread {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Spread{math.NaN(), math.NaN(), math.NaN(), 0}
	}
	sort.Float64s(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return Spread{med, v[0], v[len(v)-1], len(v)}
}

// logSlope fits log(y) = a + b log(x) by least squares and returns b.
func logSlope(xs, ys []float64) float64 {
	var sx, sy, sxx, sxy, n float64
	for i := range xs {
		if xs[i] <= 0 || ys[i] <= 0 || math.IsNaN(ys[i]) {
			continue
		}
		x, y := math.Log(xs[i]), math.Log(ys[i])
		sx, sy, sxx, sxy, n = sx+x, sy+y, sxx+x*x, sxy+x*y, n+1
	}
	if n < 2 {
		return math.NaN()
	}
	return (n*sxy - sx*sy) / (n*sxx - sx*sx)
}
