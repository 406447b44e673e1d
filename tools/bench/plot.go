//go:build linux

package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The report's figures, drawn with gonum.org/v1/plot: a Chart says what to
// show (series, axes, ticks, notes) and savePNG lays one or more of them
// side by side in a PNG.

type Series struct {
	Name   string
	X, Y   []float64
	Lo, Hi []float64 // whiskers (optional, same length as Y)
	Color  color.RGBA
	Dashed bool
	Marker int // index into markers
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
	Notes                 []string // how to read it, under the x axis
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

var markers = []draw.GlyphDrawer{draw.BoxGlyph{}, draw.CircleGlyph{}, draw.TriangleGlyph{},
	draw.PyramidGlyph{}, draw.CrossGlyph{}, draw.RingGlyph{}, draw.PlusGlyph{}, draw.SquareGlyph{}}

// whiskers are a series' min-max bars, as YErrorBars wants them.
type whiskers struct {
	plotter.XYs
	plotter.YErrors
}

// plot builds the gonum plot of c.
func (c *Chart) plot() (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = c.Title
	p.Title.TextStyle.Font.Size = vg.Points(15)
	p.X.Label.Text = c.XLabel
	if len(c.Notes) > 0 {
		p.X.Label.Text += "\n" + strings.Join(c.Notes, "; ")
	}
	p.Y.Label.Text = c.YLabel
	for _, ax := range []*plot.Axis{&p.X, &p.Y} {
		ax.Label.TextStyle.Font.Size = vg.Points(12)
		ax.Tick.Label.Font.Size = vg.Points(11)
	}
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = c.XMin, c.XMax, c.YMin, c.YMax
	if c.LogX {
		p.X.Scale = plot.LogScale{}
	}
	if c.LogY {
		p.Y.Scale = plot.LogScale{}
	}
	p.X.Tick.Marker = ticks(c.XTicks)
	p.Y.Tick.Marker = ticks(c.YTicks)
	p.Add(plotter.NewGrid())

	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.TextStyle.Font.Size = vg.Points(11)
	p.Legend.ThumbnailWidth = vg.Points(30)
	p.Legend.Padding = vg.Points(2)

	for _, s := range c.Series {
		var pts plotter.XYs
		var w whiskers
		for i := range s.Y {
			// A log axis has no room for zero or less (a figure net of
			// the idle query can be).
			if c.LogY && s.Y[i] <= 0 || c.LogX && s.X[i] <= 0 {
				continue
			}
			pts = append(pts, plotter.XY{X: s.X[i], Y: s.Y[i]})
			if len(s.Lo) == len(s.Y) && len(s.Hi) == len(s.Y) {
				lo := s.Lo[i]
				if c.LogY && lo <= 0 {
					lo = c.YMin
				}
				w.XYs = append(w.XYs, plotter.XY{X: s.X[i], Y: s.Y[i]})
				w.YErrors = append(w.YErrors, struct{ Low, High float64 }{
					math.Max(0, s.Y[i]-lo), math.Max(0, s.Hi[i]-s.Y[i])})
			}
		}
		if len(pts) == 0 {
			continue // no figure for this method: not in the legend either
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return nil, err
		}
		line.Color, line.Width = s.Color, vg.Points(2)
		if s.Dashed {
			line.Dashes = []vg.Length{vg.Points(7), vg.Points(4)}
		}
		points.Color, points.Radius = s.Color, vg.Points(4)
		points.Shape = markers[s.Marker%len(markers)]
		p.Add(line, points)
		if len(w.XYs) > 0 {
			bars, err := plotter.NewYErrorBars(w)
			if err != nil {
				return nil, err
			}
			bars.Color, bars.Width, bars.CapWidth = s.Color, vg.Points(1.2), vg.Points(6)
			p.Add(bars)
		}
		p.Legend.Add(s.Name, line, points)
	}
	return p, nil
}

func ticks(ts []Tick) plot.Ticker {
	var out plot.ConstantTicks
	for _, t := range ts {
		out = append(out, plot.Tick{Value: t.V, Label: t.Label})
	}
	return out
}

// Bars is a grouped bar chart: in each group, one bar per series.
type Bars struct {
	Title, YLabel string
	Groups        []string
	Series        []BarSeries
	YMax          float64
	Notes         []string
}

type BarSeries struct {
	Name   string
	Values []float64 // one per group; NaN: not measured (no bar)
	Color  color.RGBA
}

func (b *Bars) plot() (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = b.Title
	p.Title.TextStyle.Font.Size = vg.Points(15)
	p.X.Label.Text = strings.Join(b.Notes, "; ")
	p.Y.Label.Text = b.YLabel
	for _, ax := range []*plot.Axis{&p.X, &p.Y} {
		ax.Label.TextStyle.Font.Size = vg.Points(12)
		ax.Tick.Label.Font.Size = vg.Points(11)
	}
	p.Y.Min, p.Y.Max = 0, b.YMax
	p.X.Min, p.X.Max = -0.5, float64(len(b.Groups))-0.5
	p.Add(plotter.NewGrid())
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.TextStyle.Font.Size = vg.Points(11)
	// Bars sit side by side within a group, in data units (a group is 1
	// wide), each labelled with its value: a bar of 0 is otherwise unseen.
	step := 0.8 / float64(max(1, len(b.Series)))
	var labels plotter.XYLabels
	for i, s := range b.Series {
		vals := make(plotter.Values, len(s.Values))
		for j, v := range s.Values {
			if !math.IsNaN(v) {
				vals[j] = v
				labels.XYs = append(labels.XYs, plotter.XY{X: float64(j) - 0.4 + step*(float64(i)+0.5), Y: v + 1})
				labels.Labels = append(labels.Labels, fmt.Sprintf("%.3g", v))
			}
		}
		bars, err := plotter.NewBarChart(vals, vg.Points(36*4/float64(max(4, len(b.Groups)))*3/float64(max(3, len(b.Series)))))
		if err != nil {
			return nil, err
		}
		bars.Color, bars.LineStyle.Width = s.Color, 0
		bars.XMin = -0.4 + step*(float64(i)+0.5)
		p.Add(bars)
		p.Legend.Add(s.Name, bars)
	}
	if len(labels.XYs) > 0 {
		l, err := plotter.NewLabels(labels)
		if err != nil {
			return nil, err
		}
		for i := range l.TextStyle {
			l.TextStyle[i].Font.Size = vg.Points(10)
			l.TextStyle[i].XAlign = -0.5 // centred on the bar
		}
		p.Add(l)
	}
	p.NominalX(b.Groups...)
	return p, nil
}

// drawing is a Chart or Bars.
type drawing interface {
	plot() (*plot.Plot, error)
}

// savePNG draws the charts one above the other, each w by h pixels.
func savePNG(path string, w, h int, charts ...drawing) error {
	row := make([]*plot.Plot, len(charts))
	for i, c := range charts {
		p, err := c.plot()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		row[i] = p
	}
	// 96 dpi: the sizes are pixels on screen.
	const dpi = 96
	width := font.Length(w) * vg.Inch / dpi
	height := font.Length(h*len(charts)) * vg.Inch / dpi
	img := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(dpi))
	dc := draw.New(img)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	tiles := draw.Tiles{Rows: len(charts), Cols: 1, PadY: vg.Points(12),
		PadTop: vg.Points(6), PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(12)}
	col := make([][]*plot.Plot, len(row))
	for i, p := range row {
		col[i] = []*plot.Plot{p}
	}
	canvases := plot.Align(col, tiles, dc)
	for i, p := range row {
		p.Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
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
