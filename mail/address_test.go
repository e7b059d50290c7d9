package mail_test

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/mailqueue/mailqueue/bench/smtpsink"
	"github.com/mailqueue/mailqueue/mail"
	"github.com/mailqueue/mailqueue/testenv"
)

func TestIsPublic(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"8.8.8.8": true, "2a00:1450:4001:82b::200e": true, "192.0.2.1": true,
		"127.0.0.1": false, "::1": false, "10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false,
		"169.254.169.254": false, "fe80::1": false, "fd00::1": false, "0.0.0.0": false, "::": false,
		"100.64.0.1": false, "224.0.0.1": false, "::ffff:127.0.0.1": false, "::ffff:10.0.0.1": false,
		"255.255.255.255": false,
	} {
		if got := mail.IsPublic(netip.MustParseAddr(addr)); got != want {
			t.Errorf("IsPublic(%s) = %v, want %v", addr, got, want)
		}
	}
}

// A server marked PublicOnly is refused before a connection opens when it
// is on loopback: the sink sees no session at all.
func TestPublicOnlyRefusesLoopback(t *testing.T) {
	t.Parallel()
	sink := testenv.SMTPSink(t, smtpsink.Options{})
	srv := serverFor(sink, 1)
	srv.PublicOnly = true
	stage, err := mail.Probe(t.Context(), srv)
	if stage != mail.StageConnect || !errors.Is(err, mail.ErrNonPublicAddress) {
		t.Fatalf("Probe = %q, %v; want connect stage and ErrNonPublicAddress", stage, err)
	}
	if st := sink.Stats(); st.Connections != 0 {
		t.Errorf("sink saw %d connections, want 0", st.Connections)
	}
	srv.PublicOnly = false
	if stage, err := mail.Probe(t.Context(), srv); err != nil {
		t.Fatalf("without PublicOnly: %q, %v", stage, err)
	}
}
