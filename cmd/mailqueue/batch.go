package main

import "github.com/mailqueue/mailqueue/store"

// The service's enqueuer must offer the batch path, or POST
// /v1/emails/batch would fall back to one job insert per email.
var _ store.SendManyEnqueuer = (*lateEnqueuer)(nil)
