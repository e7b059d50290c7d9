// Shared by the Mail Queue k6 scripts: posts the README's example email.
//
//   MQ_URL      base URL (default http://127.0.0.1:8080)
//   MQ_API_KEY  an API key with the email:send scope (required)
//   MQ_QUEUE    queue name (default: the app's default queue)
import http from 'k6/http';
import { check } from 'k6';

export const BASE_URL = (__ENV.MQ_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
const API_KEY = __ENV.MQ_API_KEY;
if (!API_KEY) {
  throw new Error('set MQ_API_KEY (create an app: POST /v1/apps with the admin secret)');
}

const email = {
  from: { email: 'noreply@example.com', name: 'Example App' },
  to: [{ email: 'user@example.com', name: 'John Doe' }],
  subject: 'Your receipt',
  html: '<h1>Thanks!</h1>',
  text: 'Thanks!',
  headers: { 'X-Order': '1234' },
  metadata: { order_id: '1234' },
};
if (__ENV.MQ_QUEUE) {
  email.queue = __ENV.MQ_QUEUE;
}
const body = JSON.stringify(email);
const params = {
  headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
  tags: { name: 'POST /v1/emails' },
};

// sendEmail posts one email and checks it was accepted (202).
export function sendEmail() {
  const res = http.post(`${BASE_URL}/v1/emails`, body, params);
  check(res, { 'accepted (202)': (r) => r.status === 202 });
  return res;
}

// Thresholds shared by the scripts: the service's targets.
export const thresholds = {
  http_req_failed: ['rate<0.001'],
  checks: ['rate>0.999'],
};
