package handlers

import (
	"testing"
	"time"

	"github.com/mailqueue/mailqueue/store"
)

// Every email that is not sent yet explains itself: scheduled, retrying
// after an error, or waiting for a reason the worker recorded.
func TestWaitingReason(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	later := now.Add(2 * time.Hour)
	soon := now.Add(30 * time.Second)
	smtpErr := "451 4.7.1 try again later"
	paused := "queue default is paused"
	for _, tc := range []struct {
		name string
		e    store.Email
		want string
		next *time.Time
	}{
		{"scheduled", store.Email{Status: store.StatusQueued, ScheduledAt: &later, NextAttemptAt: &later},
			"scheduled for 2026-06-01T14:00:00Z", &later},
		{"retry", store.Email{Status: store.StatusQueued, RetryCount: 2, MaxRetries: 5, LastError: &smtpErr, NextAttemptAt: &soon},
			"retry 2 of 5 after error: 451 4.7.1 try again later", &soon},
		{"recorded reason", store.Email{Status: store.StatusQueued, WaitingReason: &paused, NextAttemptAt: &soon},
			paused, &soon},
		{"processing", store.Email{Status: store.StatusProcessing}, "being sent now", nil},
		{"due", store.Email{Status: store.StatusQueued}, "waiting for a free worker", nil},
		{"sent", store.Email{Status: store.StatusSent}, "", nil},
		{"failed", store.Email{Status: store.StatusFailed, LastError: &smtpErr, RetryCount: 5, MaxRetries: 5}, "", nil},
	} {
		got, next := waitingReason(&tc.e, now)
		if got != tc.want {
			t.Errorf("%s: waiting_reason = %q, want %q", tc.name, got, tc.want)
		}
		if (next == nil) != (tc.next == nil) || next != nil && !next.Equal(*tc.next) {
			t.Errorf("%s: next_attempt_at = %v, want %v", tc.name, next, tc.next)
		}
	}
}
