package load

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Summary holds exact latency percentiles computed from every sample.
type Summary struct {
	Count int           `json:"count"`
	Mean  time.Duration `json:"mean_ns"`
	P50   time.Duration `json:"p50_ns"`
	P95   time.Duration `json:"p95_ns"`
	P99   time.Duration `json:"p99_ns"`
	P999  time.Duration `json:"p999_ns"`
	Max   time.Duration `json:"max_ns"`
}

// Bucket is one bar of a log-linear latency histogram: samples in (Prev, Upper].
type Bucket struct {
	Upper time.Duration `json:"upper_ns"`
	Count int           `json:"count"`
}

// Summarize sorts samples in place and returns exact percentiles
// (nearest-rank). At the sample counts of these benchmarks (up to a few
// million) sorting is cheap, so no approximating histogram is needed.
func Summarize(samples []time.Duration) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	slices.Sort(samples)
	var sum time.Duration
	for _, s := range samples {
		sum += s
	}
	return Summary{
		Count: len(samples),
		Mean:  sum / time.Duration(len(samples)),
		P50:   Percentile(samples, 50),
		P95:   Percentile(samples, 95),
		P99:   Percentile(samples, 99),
		P999:  Percentile(samples, 99.9),
		Max:   samples[len(samples)-1],
	}
}

// Percentile returns the nearest-rank p-th percentile of sorted samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// bucketBounds are 1-2-5 steps per decade from 100µs to 100s.
var bucketBounds = func() []time.Duration {
	var b []time.Duration
	for d := 100 * time.Microsecond; d <= 100*time.Second; d *= 10 {
		b = append(b, d, 2*d, 5*d)
	}
	return b
}()

// Histogram buckets sorted samples on a log-linear (1-2-5) scale, trimmed to
// the range that holds samples.
func Histogram(sorted []time.Duration) []Bucket {
	if len(sorted) == 0 {
		return nil
	}
	buckets := make([]Bucket, len(bucketBounds)+1)
	for i, b := range bucketBounds {
		buckets[i].Upper = b
	}
	buckets[len(bucketBounds)].Upper = time.Duration(math.MaxInt64)
	i := 0
	for _, s := range sorted {
		for s > buckets[i].Upper {
			i++
		}
		buckets[i].Count++
	}
	first, last := -1, -1
	for i, b := range buckets {
		if b.Count > 0 {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	return buckets[first : last+1]
}

// WriteHistogram draws buckets as text bars.
func WriteHistogram(w io.Writer, buckets []Bucket) {
	most := 0
	total := 0
	for _, b := range buckets {
		most = max(most, b.Count)
		total += b.Count
	}
	for _, b := range buckets {
		label := "≤ " + FormatDuration(b.Upper)
		if b.Upper == time.Duration(math.MaxInt64) {
			label = "> 100s"
		}
		bar := 0
		if most > 0 {
			bar = int(math.Round(40 * float64(b.Count) / float64(most)))
		}
		fmt.Fprintf(w, "  %10s %8d %5.1f%% %s\n", label, b.Count, 100*float64(b.Count)/float64(total), strings.Repeat("█", bar))
	}
}

// FormatDuration prints a latency in ms with sensible precision.
func FormatDuration(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms < 1:
		return fmt.Sprintf("%.3fms", ms)
	case ms < 100:
		return fmt.Sprintf("%.2fms", ms)
	default:
		return fmt.Sprintf("%.0fms", ms)
	}
}
