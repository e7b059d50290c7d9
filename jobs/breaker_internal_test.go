package jobs

import (
	"context"
	"errors"
	"fmt"
	"net/textproto"
	"testing"
	"time"

	"github.com/mailqueue/mailqueue/mail"
	"github.com/mailqueue/mailqueue/ratelimit"
)

func TestHostFault(t *testing.T) {
	t.Parallel()
	reply := func(code int) error { return &textproto.Error{Code: code, Msg: "x"} }
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name          string
		ctx           context.Context
		err           error
		fault, counts bool
	}{
		{"success", context.Background(), nil, false, true},
		{"refused", context.Background(), &mail.SendError{Stage: mail.StageConnect, Err: errors.New("refused")}, true, true},
		{"bad greeting 554", context.Background(), &mail.SendError{Stage: mail.StageConnect, Code: 554, Permanent: true}, true, true},
		{"tls", context.Background(), &mail.SendError{Stage: mail.StageTLS, Err: errors.New("handshake")}, true, true},
		{"auth 535", context.Background(), &mail.SendError{Stage: mail.StageAuth, Code: 535, Permanent: true}, true, true},
		{"rcpt 451", context.Background(), &mail.SendError{Stage: mail.StageRcpt, Code: 451}, true, true},
		{"data 421", context.Background(), &mail.SendError{Stage: mail.StageData, Code: 421}, true, true},
		{"dropped after data", context.Background(), &mail.SendError{Stage: mail.StageDataSent, Uncertain: true, Err: errors.New("EOF")}, true, true},
		{"rcpt 550", context.Background(), &mail.SendError{Stage: mail.StageRcpt, Code: 550, Permanent: true}, false, true},
		{"data 554", context.Background(), &mail.SendError{Stage: mail.StageData, Code: 554, Permanent: true}, false, true},
		{"message not buildable", context.Background(), &mail.SendError{Stage: mail.StageMail, Permanent: true, Err: errors.New("bad")}, false, false},
		{"pool closed", context.Background(), &mail.SendError{Stage: mail.StageConnect, Err: mail.ErrPoolClosed}, false, false},
		{"our context ended", cancelled, &mail.SendError{Stage: mail.StageConnect, Err: context.Canceled}, false, false},
		{"not a send error", context.Background(), fmt.Errorf("x: %w", reply(451)), false, false},
	} {
		fault, counts := hostFault(tc.ctx, tc.err)
		if fault != tc.fault || counts != tc.counts {
			t.Errorf("%s: fault=%v counts=%v, want %v %v", tc.name, fault, counts, tc.fault, tc.counts)
		}
	}
}

func TestBreakerSnooze(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		d        ratelimit.BreakerDecision
		min, max time.Duration
	}{
		{ratelimit.BreakerDecision{State: ratelimit.BreakerOpen, RetryIn: 20 * time.Second}, 20 * time.Second, 24 * time.Second},
		{ratelimit.BreakerDecision{State: ratelimit.BreakerOpen, RetryIn: time.Millisecond}, time.Second, 1200 * time.Millisecond},
		{ratelimit.BreakerDecision{State: ratelimit.BreakerHalfOpen, RetryIn: 2 * time.Minute}, 5 * time.Second, 6 * time.Second},
	} {
		for range 50 {
			if got := breakerSnooze(tc.d); got < tc.min || got > tc.max {
				t.Errorf("breakerSnooze(%+v) = %s, want within [%s, %s]", tc.d, got, tc.min, tc.max)
			}
		}
	}
}
