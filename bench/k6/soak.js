// Soak: 200 POST /v1/emails per second for 1 hour, to find leaks and slow
// drift (watch the service's RSS and the delivery lag while it runs).
//   k6 run -e MQ_URL=… -e MQ_API_KEY=… bench/k6/soak.js
import { sendEmail, thresholds } from './lib.js';

export const options = {
  scenarios: {
    soak: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 200),
      timeUnit: '1s',
      duration: __ENV.DURATION || '1h',
      preAllocatedVUs: 50,
      maxVUs: 500,
    },
  },
  thresholds: {
    ...thresholds,
    http_req_duration: ['p(99)<20'],
    dropped_iterations: ['count<1'],
  },
};

export default function () {
  sendEmail();
}
