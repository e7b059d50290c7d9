package mail

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// ErrNonPublicAddress is the error of a dial refused because the server's
// address is loopback, private, link-local (cloud metadata services live at
// 169.254.169.254) or otherwise not on the public internet.
var ErrNonPublicAddress = errors.New("address is not public")

// sharedAddressSpace is RFC 6598 carrier-grade NAT space, private in
// practice though netip does not call it so.
var sharedAddressSpace = netip.MustParsePrefix("100.64.0.0/10")

// IsPublic reports whether a is an address on the public internet, the
// only kind a tenant's SMTP config may reach unless the operator allows
// more: anything else would let a tenant probe the operator's own network
// through the sender.
func IsPublic(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsValid() && a.IsGlobalUnicast() && !a.IsPrivate() && !sharedAddressSpace.Contains(a)
}

// publicOnly refuses, at connect time, any address that is not public. It
// runs on the address actually dialled, after DNS resolution, so a name
// that resolves to a private address (or is re-pointed to one later) is
// refused too.
func publicOnly(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return err
	}
	if !IsPublic(a) {
		return fmt.Errorf("%s: %w", a, ErrNonPublicAddress)
	}
	return nil
}
