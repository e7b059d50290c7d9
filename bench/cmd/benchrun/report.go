package main

import (
	"fmt"
	"strings"

	"github.com/mailqueue/mailqueue/bench/load"
)

// Target statuses.
const (
	met         = "met"
	notMet      = "not met"
	notMeasured = "not measured"
)

type target struct {
	name, goal, measured, status string
}

// report collects the results file in Markdown.
type report struct {
	header  strings.Builder
	body    strings.Builder
	targets []target
}

func (r *report) section(title string) { fmt.Fprintf(&r.body, "\n## %s\n\n", title) }

func (r *report) para(format string, args ...any) {
	fmt.Fprintf(&r.body, format+"\n\n", args...)
}

func (r *report) code(text string) {
	fmt.Fprintf(&r.body, "```\n%s\n```\n\n", strings.TrimRight(text, "\n"))
}

func (r *report) table(header []string, rows [][]string) {
	writeTable(&r.body, header, rows)
}

func writeTable(b *strings.Builder, header []string, rows [][]string) {
	b.WriteString("| " + strings.Join(header, " | ") + " |\n|")
	for range header {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, row := range rows {
		for i := range row {
			row[i] = strings.ReplaceAll(row[i], "|", "\\|")
		}
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
	b.WriteString("\n")
}

func (r *report) target(name, goal, measured, status string) {
	for i, t := range r.targets {
		if t.name == name {
			r.targets[i] = target{name, goal, measured, status}
			return
		}
	}
	r.targets = append(r.targets, target{name, goal, measured, status})
}

// loadRow is one line of a load table.
func loadRow(label string, res *load.Result) []string {
	target := "max (closed, " + fmt.Sprint(res.Concurrency) + " workers)"
	if res.TargetRate > 0 {
		target = fmt.Sprintf("%.0f/s (open)", res.TargetRate)
	}
	l := res.Latency
	return []string{
		label, target, fmt.Sprintf("%.1fs", res.Elapsed.Seconds()),
		fmt.Sprint(res.Sent), fmt.Sprint(res.OK), res.ErrorSummary(),
		fmt.Sprintf("%.0f", res.Rate),
		load.FormatDuration(l.P50), load.FormatDuration(l.P95), load.FormatDuration(l.P99), load.FormatDuration(l.Max),
	}
}

var loadHeader = []string{"run", "rate", "elapsed", "sent", "2xx", "errors", "achieved/s", "p50", "p95", "p99", "max"}

func histogramText(res *load.Result) string {
	var b strings.Builder
	load.WriteHistogram(&b, res.Histogram)
	return b.String()
}

func (r *report) render(errs []string) string {
	var b strings.Builder
	b.WriteString(r.header.String())
	b.WriteString("\n## Targets\n\n")
	rows := make([][]string, 0, len(r.targets))
	for _, t := range r.targets {
		rows = append(rows, []string{t.name, t.goal, t.measured, "**" + t.status + "**"})
	}
	writeTable(&b, []string{"target", "goal", "measured", "status"}, rows)
	if len(errs) > 0 {
		b.WriteString("\n## Problems during the run\n\n")
		for _, e := range errs {
			b.WriteString("- " + strings.ReplaceAll(e, "\n", "\n  ") + "\n")
		}
	}
	b.WriteString(r.body.String())
	return b.String()
}
