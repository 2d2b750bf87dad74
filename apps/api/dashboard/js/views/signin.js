import { api, session } from '../api.js';
import { h, messageArea } from '../dom.js';

/** The sign-in form: a key is kept only once the API has accepted it. */
export function signIn(main, { reason, kind = 'error', onSignedIn }) {
  const message = messageArea();
  if (reason) message.show(reason, kind);
  const input = h('input', { id: 'api-key', name: 'apiKey', type: 'password', autocomplete: 'off', required: true, 'aria-describedby': 'api-key-hint' });
  const button = h('button', { type: 'submit' }, 'Sign in');
  const form = h(
    'form',
    { class: 'card sign-in', 'aria-labelledby': 'sign-in-title' },
    h('h1', { id: 'sign-in-title' }, 'Sign in'),
    h(
      'div',
      { class: 'field' },
      h('label', { for: 'api-key' }, 'API key'),
      input,
      h('p', { id: 'api-key-hint', class: 'hint' }, 'ft_… — kept in this tab only (sessionStorage) and sent as a bearer token.'),
    ),
    message.el,
    h('p', { class: 'actions' }, button),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return message.show('Enter an API key.');
    button.disabled = true;
    message.show('Checking the key…', 'muted');
    try {
      await api('GET', '/v1/usage', { key });
      session.signIn(key);
      onSignedIn();
    } catch (error) {
      message.show(error.status === 401 ? `That key was not accepted (${error.code}).` : `Could not sign in: ${error.message}`);
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  main.replaceChildren(form);
  input.focus();
}
