#!/usr/bin/env bash
# First run of docker-compose.yml (see docs/deploy.md, "Docker Compose").
#
#   deploy/compose/first-run.sh secrets [CLIENT]   before `docker compose up`: writes the secret
#       files that are missing (DB passwords, CiviCRM admin password, the gateway's CiviCRM API
#       key, the sandbox profile's key) and one client token for CLIENT (default "app"), printed
#       once.
#   deploy/compose/first-run.sh civicrm            after `docker compose up -d`: installs CiviCRM
#       if it is not installed yet, then creates (or updates) the role "civicrm_gateway", the
#       user "civicrm-gateway" with that role and its contact, and gives that contact the API key
#       from the secret file. Safe to run again, e.g. after rotating the key.
#
# Secrets never appear on a command line: they go through files and standard input.
set -euo pipefail

cd "$(dirname "$0")/../.."
SECRETS=deploy/compose/secrets
COMPOSE=${COMPOSE:-docker compose}
GATEWAY_IMAGE=${GATEWAY_IMAGE:-civicrm-gateway:local}

# Permissions of the role the gateway's CiviCRM user gets. "authenticate with api key" lets the
# key pass AuthX's guard without the site key; the rest is what the gateway's clients may do:
# narrow it to what they need (the gateway's own per-client policy comes on top).
ROLE_PERMISSIONS='["access CiviCRM", "access AJAX API", "authenticate with api key",
  "view all contacts", "edit all contacts", "add contacts"]'

random_secret() {
  # 43 characters of [A-Za-z0-9] (over 250 bits), from 48 random bytes.
  head -c 48 /dev/urandom | base64 | tr -d '+/=\n' | head -c 43
}

write_secret() {  # name, value: only if missing; readable inside the containers (non-root users)
  local file="$SECRETS/$1"
  if [ -s "$file" ]; then
    echo "kept    $file"
    return
  fi
  (umask 022 && printf '%s\n' "$2" > "$file")
  chmod 0644 "$file"
  echo "created $file"
}

cmd_secrets() {
  local client=${1:-app}
  mkdir -p "$SECRETS"
  # The directory keeps other host users out; the files must stay readable by the containers'
  # users (www-data, mysql, uid 10001), since plain compose bind-mounts them as they are.
  chmod 0700 "$SECRETS"
  write_secret db_password "$(random_secret)"
  write_secret db_root_password "$(random_secret)"
  write_secret civicrm_admin_password "$(random_secret)"
  write_secret civi_gateway_http_api_key "$(random_secret)"
  write_secret sandbox_api_key "$(random_secret)"   # the "sandbox" profile's emulator
  if [ -s "$SECRETS/civi_gateway_client_tokens" ]; then
    echo "kept    $SECRETS/civi_gateway_client_tokens (add lines from 'civicrm-gateway token create NAME')"
    return
  fi
  local line
  # stderr (the token itself) goes to the operator's terminal; stdout is the line to store.
  if command -v civicrm-gateway > /dev/null; then
    line=$(civicrm-gateway token create "$client")
  else
    line=$(docker run --rm "$GATEWAY_IMAGE" token create "$client")
  fi
  write_secret civi_gateway_client_tokens "$line"
  echo "The token above is shown once: give it to client '$client' (Authorization: Bearer ...)."
}

# PHP run by `cv ev` inside the CiviCRM container; reads the API key from standard input.
# The role, contact and user are matched by name, so a second run updates instead of duplicating.
php_create_api_user() {
  cat <<PHP
\$key = trim(stream_get_contents(STDIN));
if (strlen(\$key) < 20) { throw new \Exception('API key missing or shorter than 20 characters'); }
\$role = \Civi\Api4\Role::save(FALSE)
  ->addRecord(['name' => 'civicrm_gateway', 'label' => 'CiviCRM gateway',
    'permissions' => json_decode('$(echo "$ROLE_PERMISSIONS" | tr -d '\n')', TRUE)])
  ->setMatch(['name'])->execute()->first();
\$user = \Civi\Api4\User::get(FALSE)->addWhere('username', '=', 'civicrm-gateway')
  ->execute()->first();
if (\$user && \$user['contact_id']) {
  \$cid = \$user['contact_id'];
}
else {
  \$cid = \Civi\Api4\Contact::create(FALSE)->setValues(['contact_type' => 'Individual',
    'first_name' => 'CiviCRM', 'last_name' => 'Gateway'])->execute()->first()['id'];
  \Civi\Api4\User::create(FALSE)->setValues(['username' => 'civicrm-gateway',
    'contact_id' => \$cid, 'uf_name' => 'civicrm-gateway@localhost.invalid',
    'roles' => [\$role['id']], 'is_active' => TRUE])->execute();
}
\Civi\Api4\Contact::update(FALSE)->addWhere('id', '=', \$cid)->addValue('api_key', \$key)->execute();
echo "API user civicrm-gateway (contact \$cid, role civicrm_gateway) has the gateway's key\n";
PHP
}

cmd_civicrm() {
  local key="$SECRETS/civi_gateway_http_api_key"
  [ -s "$key" ] || { echo "no $key: run '$0 secrets' first" >&2; exit 1; }
  # As www-data, with the DB and admin passwords read from the secret files inside the container.
  if $COMPOSE exec -T -u www-data civicrm test -f /var/www/html/private/civicrm.settings.php; then
    echo "CiviCRM is already installed"
  else
    echo "installing CiviCRM (admin user 'admin', password in $SECRETS/civicrm_admin_password)"
    $COMPOSE exec -T -u www-data civicrm sh -c \
      'CIVICRM_DB_PASSWORD="$(cat /run/secrets/db_password)" CIVICRM_ADMIN_USER=admin \
       CIVICRM_ADMIN_PASS="$(cat /run/secrets/civicrm_admin_password)" civicrm-docker-install'
  fi
  $COMPOSE exec -T -u www-data civicrm cv ev "$(php_create_api_user)" < "$key"
  echo "check: curl -s localhost:\${GATEWAY_PORT:-8000}/readyz"
}

case "${1:-}" in
  secrets) shift; cmd_secrets "$@" ;;
  civicrm) cmd_civicrm ;;
  *) echo "usage: $0 secrets [CLIENT] | civicrm" >&2; exit 2 ;;
esac
