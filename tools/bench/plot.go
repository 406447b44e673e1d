//go:build linux

package main

import (
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
)

// A small line-chart renderer (image/png only): log or linear axes, one
// line per series with markers and min-max whiskers, a legend on the right.

type Series struct {
	Name   string
	X, Y   []float64
	Lo, Hi []float64 // whiskers (optional, same length as Y)
	Color  color.RGBA
	Dashed bool
	Marker int // 0 square, 1 circle, 2 triangle, 3 diamond, 4 cross
}

type Tick struct {
	V     float64
	Label string
}

type Chart struct {
	Title, XLabel, YLabel string
	LogX, LogY            bool
	XMin, XMax            float64
	YMin, YMax            float64
	XTicks, YTicks        []Tick
	Series                []Series
	Notes                 []string // lines under the legend
}

var palette = []color.RGBA{
	{214, 39, 40, 255},   // red
	{255, 127, 14, 255},  // orange
	{31, 119, 180, 255},  // blue
	{44, 160, 44, 255},   // green
	{148, 103, 189, 255}, // purple
	{23, 190, 207, 255},  // cyan
	{140, 86, 75, 255},   // brown
	{127, 127, 127, 255}, // grey
	{188, 189, 34, 255},  // olive
	{227, 119, 194, 255}, // pink
}

var (
	black = color.RGBA{0, 0, 0, 255}
	grid  = color.RGBA{225, 225, 225, 255}
	white = color.RGBA{255, 255, 255, 255}
)

type canvas struct{ img *image.RGBA }

func newCanvas(w, h int) *canvas {
	c := &canvas{image.NewRGBA(image.Rect(0, 0, w, h))}
	c.fill(c.img.Bounds(), white)
	return c
}

func (c *canvas) set(x, y int, col color.RGBA) {
	if image.Pt(x, y).In(c.img.Bounds()) {
		c.img.SetRGBA(x, y, col)
	}
}

func (c *canvas) fill(r image.Rectangle, col color.RGBA) {
	r = r.Intersect(c.img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			c.img.SetRGBA(x, y, col)
		}
	}
}

// line draws a line of width w, dashed if dash > 0 (dash length in px).
func (c *canvas) line(x0, y0, x1, y1 float64, w int, col color.RGBA, dash float64) {
	dx, dy := x1-x0, y1-y0
	n := int(math.Max(math.Abs(dx), math.Abs(dy))) + 1
	length := math.Hypot(dx, dy)
	for i := 0; i <= n; i++ {
		t := float64(i) / float64(n)
		if dash > 0 && math.Mod(t*length, 2*dash) > dash {
			continue
		}
		x, y := int(math.Round(x0+t*dx)), int(math.Round(y0+t*dy))
		for a := -(w - 1) / 2; a <= w/2; a++ {
			for b := -(w - 1) / 2; b <= w/2; b++ {
				c.set(x+a, y+b, col)
			}
		}
	}
}

func (c *canvas) marker(x, y float64, kind int, col color.RGBA) {
	cx, cy := int(math.Round(x)), int(math.Round(y))
	const r = 4
	for a := -r; a <= r; a++ {
		for b := -r; b <= r; b++ {
			in := false
			switch kind % 5 {
			case 0:
				in = true
			case 1:
				in = a*a+b*b <= r*r
			case 2:
				in = b >= -r && 2*abs(a) <= b+r
			case 3:
				in = abs(a)+abs(b) <= r
			case 4:
				in = abs(abs(a)-abs(b)) <= 1
			}
			if in {
				c.set(cx+a, cy+b, col)
			}
		}
	}
}

func abs(a int) int {
	if a < 0 {
		return -a
	}
	return a
}

// text draws s with its top-left corner at (x, y), glyphs scaled by s.
func (c *canvas) text(x, y int, s string, scale int, col color.RGBA) {
	for _, r := range s {
		glyphDots(r, func(row, bit int) {
			c.fill(image.Rect(x+bit*scale, y+row*scale, x+(bit+1)*scale, y+(row+1)*scale), col)
		})
		x += 6 * scale
	}
}

// textUp draws s rotated 90° counter-clockwise, its baseline at x, ending at y.
func (c *canvas) textUp(x, y int, s string, scale int, col color.RGBA) {
	for _, r := range s {
		glyphDots(r, func(row, bit int) {
			px, py := x+row*scale, y-(bit+1)*scale
			c.fill(image.Rect(px, py, px+scale, py+scale), col)
		})
		y -= 6 * scale
	}
}

// glyphDots calls dot for each lit pixel of r's glyph: row from the top
// (descenders shifted down 2), bit from the left.
func glyphDots(r rune, dot func(row, bit int)) {
	if r < 32 || r > 126 {
		r = '?'
	}
	g, dy := font5x7[r-32], 0
	if descends(r) {
		dy = 2
	}
	for row := 0; row < 7; row++ {
		for bit := 0; bit < 5; bit++ {
			if g[row]&(0x10>>bit) != 0 {
				dot(row+dy, bit)
			}
		}
	}
}

func textWidth(s string, scale int) int { return len(s) * 6 * scale }

// Draw renders the chart into the rectangle r of c.
func (ch *Chart) Draw(c *canvas, r image.Rectangle) {
	const legendW = 250
	plot := image.Rect(r.Min.X+80, r.Min.Y+40, r.Max.X-legendW-20, r.Max.Y-60)
	xpos := func(v float64) float64 {
		a, b, x := ch.XMin, ch.XMax, v
		if ch.LogX {
			a, b, x = math.Log10(a), math.Log10(b), math.Log10(v)
		}
		return float64(plot.Min.X) + (x-a)/(b-a)*float64(plot.Dx())
	}
	ypos := func(v float64) float64 {
		a, b, y := ch.YMin, ch.YMax, v
		if ch.LogY {
			if v <= 0 {
				v = ch.YMin
			}
			a, b, y = math.Log10(a), math.Log10(b), math.Log10(v)
		}
		y = math.Max(a-(b-a)*0.02, math.Min(b+(b-a)*0.02, y))
		return float64(plot.Max.Y) - (y-a)/(b-a)*float64(plot.Dy())
	}

	// Title, grid, ticks, axes.
	c.text(r.Min.X+(r.Dx()-textWidth(ch.Title, 2))/2, r.Min.Y+10, ch.Title, 2, black)
	for _, t := range ch.XTicks {
		x := xpos(t.V)
		c.line(x, float64(plot.Min.Y), x, float64(plot.Max.Y), 1, grid, 0)
		c.line(x, float64(plot.Max.Y), x, float64(plot.Max.Y+5), 1, black, 0)
		c.text(int(x)-textWidth(t.Label, 2)/2, plot.Max.Y+10, t.Label, 2, black)
	}
	for _, t := range ch.YTicks {
		y := ypos(t.V)
		c.line(float64(plot.Min.X), y, float64(plot.Max.X), y, 1, grid, 0)
		c.line(float64(plot.Min.X-5), y, float64(plot.Min.X), y, 1, black, 0)
		c.text(plot.Min.X-10-textWidth(t.Label, 2), int(y)-7, t.Label, 2, black)
	}
	c.line(float64(plot.Min.X), float64(plot.Max.Y), float64(plot.Max.X), float64(plot.Max.Y), 2, black, 0)
	c.line(float64(plot.Min.X), float64(plot.Min.Y), float64(plot.Min.X), float64(plot.Max.Y), 2, black, 0)
	c.text(plot.Min.X+(plot.Dx()-textWidth(ch.XLabel, 2))/2, plot.Max.Y+34, ch.XLabel, 2, black)
	c.textUp(r.Min.X+8, plot.Min.Y+(plot.Dy()+textWidth(ch.YLabel, 2))/2, ch.YLabel, 2, black)

	// Series.
	for _, s := range ch.Series {
		dash := 0.0
		if s.Dashed {
			dash = 7
		}
		var px, py float64
		first := true
		for i := range s.X {
			if math.IsNaN(s.Y[i]) || (ch.LogY && s.Y[i] <= 0) {
				first = true
				continue
			}
			x, y := xpos(s.X[i]), ypos(s.Y[i])
			if !first {
				c.line(px, py, x, y, 2, s.Color, dash)
			}
			px, py, first = x, y, false
		}
		for i := range s.X {
			if math.IsNaN(s.Y[i]) || (ch.LogY && s.Y[i] <= 0) {
				continue
			}
			x, y := xpos(s.X[i]), ypos(s.Y[i])
			if s.Lo != nil && !math.IsNaN(s.Lo[i]) && !math.IsNaN(s.Hi[i]) {
				lo, hi := ypos(math.Max(s.Lo[i], ch.YMin)), ypos(s.Hi[i])
				c.line(x, lo, x, hi, 1, s.Color, 0)
				c.line(x-4, lo, x+4, lo, 1, s.Color, 0)
				c.line(x-4, hi, x+4, hi, 1, s.Color, 0)
			}
			c.marker(x, y, s.Marker, s.Color)
		}
	}

	// Legend.
	lx, ly := r.Max.X-legendW, plot.Min.Y
	for _, s := range ch.Series {
		dash := 0.0
		if s.Dashed {
			dash = 5
		}
		c.line(float64(lx), float64(ly+7), float64(lx+30), float64(ly+7), 2, s.Color, dash)
		c.marker(float64(lx+15), float64(ly+7), s.Marker, s.Color)
		c.text(lx+38, ly+4, s.Name, 1, black)
		ly += 20
	}
	ly += 10
	for _, n := range ch.Notes {
		c.text(lx, ly, n, 1, black)
		ly += 12
	}
}

// savePNG writes charts stacked vertically, each w x h.
func savePNG(path string, w, h int, charts ...*Chart) error {
	c := newCanvas(w, h*len(charts))
	for i, ch := range charts {
		ch.Draw(c, image.Rect(0, i*h, w, (i+1)*h))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, c.img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// logTicks returns ticks at 1, 2, 5 x 10^k within [lo, hi].
func logTicks(lo, hi float64, label func(float64) string) []Tick {
	var ts []Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if v >= lo*0.999 && v <= hi*1.001 {
				ts = append(ts, Tick{v, label(v)})
			}
		}
	}
	return ts
}
