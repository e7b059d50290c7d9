//go:build !unix || aix

package mail

import "net"

// idleQuiet cannot peek at the socket here, so it never vouches for an
// idle session: transact then keeps the message until the envelope is
// answered.
func idleQuiet(net.Conn) bool { return false }
