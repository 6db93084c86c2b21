// The login page's only script: shows why the last attempt failed (the server redirects
// back with ?error=1 or ?error=rate). No inline script: the CSP forbids it.

const MESSAGES = {
  '1': 'Wrong password',
  rate: 'Too many attempts, wait a minute',
};

const error = new URLSearchParams(location.search).get('error');
const box = document.getElementById('login-error');
if (box && error !== null) {
  box.textContent = MESSAGES[error] ?? 'Sign-in failed';
  box.hidden = false;
  document.getElementById('password')?.focus();
}
