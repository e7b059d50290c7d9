package jobs

import (
	"context"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/mailqueue/mailqueue/store"
)

// SimulatorDomain is the domain of the sandbox's simulator recipients:
// bounce@ bounces hard, softbounce@ bounces soft once and is then
// delivered, complaint@ is delivered and then complains. Any other
// recipient of a sandbox email is simply delivered.
const SimulatorDomain = "simulator.mailqueue.dev"

// softBounceRetry is how soon a simulated soft bounce is tried again: the
// sandbox shows the retry without making integration tests wait for the
// queue's real schedule.
const softBounceRetry = time.Second

// simulation is what the simulator recipients of an email ask for.
type simulation struct {
	hard, complaint []string
	soft            string
}

func simulationOf(e *store.Email) simulation {
	var s simulation
	for _, l := range [][]store.Address{e.To, e.Cc, e.Bcc} {
		for _, a := range l {
			local, domain, ok := strings.Cut(strings.ToLower(a.Email), "@")
			if !ok || domain != SimulatorDomain {
				continue
			}
			switch local {
			case "bounce":
				s.hard = append(s.hard, a.Email)
			case "softbounce":
				if s.soft == "" {
					s.soft = a.Email
				}
			case "complaint":
				s.complaint = append(s.complaint, a.Email)
			}
		}
	}
	return s
}

// simulate runs a sandbox email, already processing, through what would
// happen to it for real, without SMTP (DESIGN.md, decision 9): sent then
// delivered, or the outcome its simulator recipients ask for. Bounces and
// complaints are recorded by the same store functions real ones use, so
// their events, suppression entries and webhooks are the real ones.
func (w *SendWorker) simulate(ctx context.Context, e *store.EmailForSend, job *river.Job[SendArgs]) error {
	sim := simulationOf(&e.Email)
	if sim.soft != "" {
		earlier, err := w.Store.EventCount(ctx, e.ID, "deferred")
		if err != nil {
			return err
		}
		if earlier == 0 {
			// What a 452 at RCPT does for real: deferred, tried again later.
			// No suppression: a temporary failure is what retries are for.
			_, err := w.transition(ctx, &store.EmailTransitionParams{
				ID: e.ID, From: sending, Status: store.StatusQueued, Event: "deferred",
				Data: map[string]any{
					"sandbox": true, "attempt": job.Attempt, "recipient": sim.soft, "bounce_type": store.BounceSoft,
					"smtp_code": 452, "enhanced_code": "4.2.2", "error": "452 4.2.2 mailbox full (simulated)",
					"will_retry": true,
				},
				At: w.now(),
			})
			if err != nil {
				return err
			}
			return river.JobSnooze(softBounceRetry)
		}
	}

	sentAt := w.now()
	moved, err := w.transition(ctx, &store.EmailTransitionParams{
		ID: e.ID, From: sending, Status: store.StatusSent, Event: "sent",
		Data: map[string]any{"sandbox": true, "attempt": job.Attempt}, SentAt: &sentAt, At: sentAt,
	})
	if err != nil || !moved {
		return err
	}
	// Outcomes arrive after the send: record them even if the job's
	// context ends now, as a real report would still arrive.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	sandbox := map[string]any{"sandbox": true}
	if len(sim.hard) > 0 {
		for _, rcpt := range sim.hard {
			err := w.Store.RecordBounce(rctx, &store.BounceParams{
				AppID: e.AppID, EmailID: e.ID, Recipient: rcpt, Type: store.BounceHard,
				SMTPCode: 550, EnhancedCode: "5.1.1", Message: "550 5.1.1 mailbox does not exist (simulated)",
				Extra: sandbox, At: w.now(),
			})
			if err != nil {
				return err
			}
		}
		return nil
	}
	deliveredAt := w.now()
	_, err = w.transition(rctx, &store.EmailTransitionParams{
		ID: e.ID, From: []string{store.StatusSent}, Status: store.StatusDelivered, Event: "delivered",
		Data: sandbox, DeliveredAt: &deliveredAt, At: deliveredAt,
	})
	if err != nil {
		return err
	}
	for _, rcpt := range sim.complaint {
		err := w.Store.RecordComplaint(rctx, &store.ComplaintParams{
			AppID: e.AppID, EmailID: e.ID, Recipient: rcpt, Extra: sandbox, At: w.now(),
		})
		if err != nil {
			return err
		}
	}
	return nil
}
