package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/mailqueue/mailqueue/store"
)

// A 09:00 Europe/Berlin job fires at 09:00 local time on both sides of each
// daylight saving change: 08:00 UTC in winter (CET), 07:00 UTC in summer
// (CEST). The changes of 2026 are on Sunday 29 March and Sunday 25 October.
func TestScheduleNextAcrossDST(t *testing.T) {
	t.Parallel()
	s, err := store.ParseSchedule("0 9 * * *", "Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		from  time.Time
		wantU []string // consecutive occurrences, UTC
	}{
		{"spring forward", time.Date(2026, 3, 27, 12, 0, 0, 0, time.UTC), []string{
			"2026-03-28T08:00:00Z", // Saturday, CET
			"2026-03-29T07:00:00Z", // Sunday: the clocks went forward at 02:00
			"2026-03-30T07:00:00Z",
		}},
		{"fall back", time.Date(2026, 10, 23, 12, 0, 0, 0, time.UTC), []string{
			"2026-10-24T07:00:00Z", // Saturday, CEST
			"2026-10-25T08:00:00Z", // Sunday: the clocks went back at 03:00
			"2026-10-26T08:00:00Z",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := tc.from
			berlin, _ := time.LoadLocation("Europe/Berlin")
			for _, want := range tc.wantU {
				at = s.Next(at)
				if got := at.Format(time.RFC3339); got != want {
					t.Errorf("next = %s, want %s", got, want)
				}
				if at.Location() != time.UTC {
					t.Errorf("next %s is not in UTC", at)
				}
				if l := at.In(berlin); l.Hour() != 9 || l.Minute() != 0 {
					t.Errorf("next %s is %s in Berlin, want 09:00", at, l.Format("15:04"))
				}
			}
		})
	}
}

func TestParseScheduleRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		expr, tz, field string
	}{
		{"0 9 * *", "UTC", "cron_expression"},               // 4 fields
		{"0 0 9 * * *", "UTC", "cron_expression"},           // 6 fields (seconds)
		{"@daily", "UTC", "cron_expression"},                // descriptor
		{"CRON_TZ=UTC 0 9 * * *", "UTC", "cron_expression"}, // zone prefix
		{"61 9 * * *", "UTC", "cron_expression"},
		{"0 9 * * FOO", "UTC", "cron_expression"},
		{"0 9 * * *", "", "timezone"},
		{"0 9 * * *", "Local", "timezone"},
		{"0 9 * * *", "Mars/Olympus", "timezone"},
		{"0 9 * * *", "../../etc/passwd", "timezone"},
	} {
		_, err := store.ParseSchedule(tc.expr, tc.tz)
		var se *store.ScheduleError
		if !errors.As(err, &se) || se.Field != tc.field {
			t.Errorf("ParseSchedule(%q, %q) = %v, want a %s error", tc.expr, tc.tz, err, tc.field)
		}
	}
	if _, err := store.ParseSchedule("*/15 9-17 * * MON-FRI", "America/New_York"); err != nil {
		t.Errorf("valid schedule refused: %v", err)
	}
}
