"""The requests of the Shelfwise Postman collection, folder by folder (see build_collection.py).

Each request is a dict: name, method, path (after `{{baseUrl}}`), optional `auth` (the
collection variable holding a bearer credential), headers, a body (`json`, `raw` or
`file`), a pre-request script `pre` and its own test script `test` (JavaScript; the
helpers `body`, `header`, `status`, `problem`, `isJson`, `save` and `load` are in scope).
Scripts chain ids and tokens through collection variables.
"""

# ruff: noqa: E501  (the test scripts are JavaScript source, kept one statement a line)

from __future__ import annotations

from typing import Any

Spec = dict[str, Any]

RUN = "{{run}}"
NEW_EMAIL = "newman-" + RUN + "@example.com"
NEW_PASSWORD = "newman-" + RUN + "-long-passphrase"
UUID_ZERO = "00000000-0000-4000-8000-000000000000"


def key(name: str) -> dict[str, str]:
    """An Idempotency-Key header from a variable set by a pre-request script."""
    return {"Idempotency-Key": "{{" + name + "}}"}


def fresh_key(name: str) -> str:
    return f"save('{name}', 'nm-' + pm.variables.replaceIn('{{{{$guid}}}}'));"


def login_as(role: str, variable: str) -> Spec:
    return {
        "name": f"Log in as {role} (token pair)",
        "method": "POST",
        "path": "/v1/auth/login",
        "json": {"email": "{{" + role + "Email}}", "password": "{{" + role + "Password}}"},
        "test": f"""
status(200);
isJson();
pm.test('an access token (a JWT) and a refresh token', () => {{
  pm.expect(body.access_token.split('.')).to.have.lengthOf(3);
  pm.expect(body.token_type.toLowerCase()).to.eql('bearer');
  pm.expect(body.refresh_token).to.be.a('string').with.length.above(15);
  pm.expect(body.expires_in).to.be.above(0);
}});
pm.test('tokens are not cached', () => pm.expect(header('Cache-Control')).to.include('no-store'));
save('{variable}', body.access_token);
""",
    }


SETUP: list[Spec] = [
    {
        "name": "Health (sets this run's unique suffix)",
        "method": "GET",
        "path": "/healthz",
        "pre": """
pm.collectionVariables.set('run', Date.now().toString(36) + Math.random().toString(36).slice(2, 8));
""",
        "test": """
status(200);
pm.test('ok', () => pm.expect(body.status).to.eql('ok'));
pm.test('the run suffix is set', () => pm.expect(load('run')).to.match(/^[a-z0-9]{8,}$/));
""",
    },
    login_as("admin", "adminToken"),
    login_as("staff", "staffToken"),
    login_as("customer", "customerToken"),
    {
        "name": "Who am I (customer)",
        "method": "GET",
        "path": "/v1/auth/me",
        "auth": "customerToken",
        "test": """
status(200);
pm.test('a customer user with customer scopes', () => {
  pm.expect(body.kind).to.eql('user');
  pm.expect(body.user.role).to.eql('customer');
  pm.expect(body.scopes).to.include('orders:write').and.not.include('orders:manage');
});
save('customerId', body.id);
""",
    },
]

AUTH: list[Spec] = [
    {
        "name": "Register a new customer",
        "method": "POST",
        "path": "/v1/auth/register",
        "json": {"email": NEW_EMAIL, "password": NEW_PASSWORD, "full_name": "Newman " + RUN},
        "test": """
status(201);
isJson();
pm.test('the new user is an active customer', () => {
  pm.expect(body.email).to.eql(pm.variables.replaceIn('newman-{{run}}@example.com'));
  pm.expect(body.role).to.eql('customer');
  pm.expect(body.is_active).to.be.true;
});
pm.test('no password or hash is echoed', () => {
  pm.expect(pm.response.text()).to.not.include('passphrase');
  pm.expect(body).to.not.have.any.keys('password', 'password_hash');
});
save('otherId', body.id);
""",
    },
    {
        "name": "Register the same email again → 409",
        "method": "POST",
        "path": "/v1/auth/register",
        "json": {"email": NEW_EMAIL, "password": NEW_PASSWORD},
        "test": """
status(409);
pm.test('no user id in the refusal', () => pm.expect(body).to.not.have.property('id'));
""",
    },
    {
        "name": "Register with a short password → 422 naming the field",
        "method": "POST",
        "path": "/v1/auth/register",
        "json": {"email": "newman-short-" + RUN + "@example.com", "password": "short"},
        "test": """
problem(422, 'validation_failed');
pm.test('errors name the password', () => {
  pm.expect(body.errors.map((e) => e.field).join(' ')).to.include('password');
});
""",
    },
    {
        "name": "Log in as the new customer",
        "method": "POST",
        "path": "/v1/auth/login",
        "json": {"email": NEW_EMAIL, "password": NEW_PASSWORD},
        "test": """
status(200);
pm.test('a token pair', () => {
  pm.expect(body.access_token).to.be.a('string');
  pm.expect(body.refresh_token).to.be.a('string');
});
save('otherToken', body.access_token);
save('refresh1', body.refresh_token);
""",
    },
    {
        "name": "Log in with a wrong password → 401",
        "method": "POST",
        "path": "/v1/auth/login",
        "json": {"email": NEW_EMAIL, "password": "not-the-password-at-all"},
        "test": """
problem(401, 'invalid_credentials');
pm.test('no token', () => pm.expect(body).to.not.have.property('access_token'));
""",
    },
    {
        "name": "Refresh: rotation gives a new pair",
        "method": "POST",
        "path": "/v1/auth/token/refresh",
        "json": {"refresh_token": "{{refresh1}}"},
        "test": """
status(200);
pm.test('a new refresh token, not the one presented', () => {
  pm.expect(body.refresh_token).to.be.a('string').and.not.eql(load('refresh1'));
});
pm.test('a new access token', () => pm.expect(body.access_token.split('.')).to.have.lengthOf(3));
pm.test('not cached', () => pm.expect(header('Cache-Control')).to.include('no-store'));
save('refresh2', body.refresh_token);
""",
    },
    {
        "name": "Refresh: reusing the rotated token → 401",
        "method": "POST",
        "path": "/v1/auth/token/refresh",
        "json": {"refresh_token": "{{refresh1}}"},
        "test": """
status(401);
pm.test('no tokens handed out', () => pm.expect(body).to.not.have.property('access_token'));
""",
    },
    {
        "name": "Refresh: reuse revoked the family, the newest token is dead too",
        "method": "POST",
        "path": "/v1/auth/token/refresh",
        "json": {"refresh_token": "{{refresh2}}"},
        "test": """
status(401);
pm.test('no tokens handed out', () => pm.expect(body).to.not.have.property('access_token'));
""",
    },
    {
        "name": "Log in again (a fresh refresh family)",
        "method": "POST",
        "path": "/v1/auth/login",
        "json": {"email": NEW_EMAIL, "password": NEW_PASSWORD},
        "test": """
status(200);
save('otherToken', body.access_token);
save('refresh3', body.refresh_token);
pm.test('a refresh token', () => pm.expect(body.refresh_token).to.be.a('string'));
""",
    },
    {
        "name": "Sign-ins of the new customer list the refresh family",
        "method": "GET",
        "path": "/v1/auth/sessions",
        "auth": "otherToken",
        "test": """
status(200);
pm.test('at least one active refresh family', () => {
  const families = body.filter((s) => s.kind === 'refresh_family');
  pm.expect(families.length).to.be.at.least(1);
  save('familyId', families[0].id);
});
pm.test('not cached', () => pm.expect(header('Cache-Control')).to.include('no-store'));
""",
    },
    {
        "name": "Revoke that sign-in",
        "method": "DELETE",
        "path": "/v1/auth/sessions/{{familyId}}",
        "auth": "otherToken",
        "test": """
status(204);
pm.test('no body', () => pm.expect(pm.response.text()).to.eql(''));
""",
    },
    {
        "name": "Revoke it again → 404",
        "method": "DELETE",
        "path": "/v1/auth/sessions/{{familyId}}",
        "auth": "otherToken",
        "test": "problem(404, /not_found$/);",
    },
    {
        "name": "Refresh with the revoked family → 401",
        "method": "POST",
        "path": "/v1/auth/token/refresh",
        "json": {"refresh_token": "{{refresh3}}"},
        "test": "status(401);",
    },
    {
        "name": "Log in for logout",
        "method": "POST",
        "path": "/v1/auth/login",
        "json": {"email": NEW_EMAIL, "password": NEW_PASSWORD},
        "test": """
status(200);
save('refresh4', body.refresh_token);
pm.test('a refresh token', () => pm.expect(body.refresh_token).to.be.a('string'));
""",
    },
    {
        "name": "Log out ends the refresh family",
        "method": "POST",
        "path": "/v1/auth/logout",
        "json": {"refresh_token": "{{refresh4}}"},
        "test": "status(204);",
    },
    {
        "name": "Refresh after logout → 401",
        "method": "POST",
        "path": "/v1/auth/token/refresh",
        "json": {"refresh_token": "{{refresh4}}"},
        "test": "status(401);",
    },
    {
        "name": "Refresh with nothing to refresh → 401",
        "method": "POST",
        "path": "/v1/auth/token/refresh",
        "json": {},
        "test": "status(401);",
    },
    {
        "name": "Session sign-in (browser) sets the session cookie and a CSRF token",
        "method": "POST",
        "path": "/v1/auth/session",
        "json": {"email": "{{staffEmail}}", "password": "{{staffPassword}}"},
        "test": """
status(200);
const cookie = pm.response.headers.all()
  .filter((h) => h.key.toLowerCase() === 'set-cookie')
  .map((h) => h.value)
  .find((v) => v.startsWith('__Host-session='));
pm.test('a __Host-session cookie, HttpOnly, SameSite=Lax, Path=/', () => {
  pm.expect(cookie).to.be.a('string');
  pm.expect(cookie).to.match(/HttpOnly/i);
  pm.expect(cookie).to.match(/SameSite=lax/i);
  pm.expect(cookie).to.match(/Path=\\//);
});
pm.test('the signed-in user and a CSRF token', () => {
  pm.expect(body.user.role).to.eql('staff');
  pm.expect(body.csrf_token).to.be.a('string').with.length.above(20);
});
save('sessionCookie', cookie.split(';')[0]);
save('csrf', body.csrf_token);
""",
    },
    {
        "name": "CSRF token of the session",
        "method": "GET",
        "path": "/v1/auth/csrf",
        "headers": {"Cookie": "{{sessionCookie}}"},
        "test": """
status(200);
pm.test('the same token the sign-in gave', () => pm.expect(body.csrf_token).to.eql(load('csrf')));
""",
    },
    {
        "name": "CSRF token with a bearer token → 404 (only sessions have one)",
        "method": "GET",
        "path": "/v1/auth/csrf",
        "auth": "staffToken",
        "test": "problem(404, /not_found$/);",
    },
    {
        "name": "Who am I (session cookie)",
        "method": "GET",
        "path": "/v1/auth/me",
        "headers": {"Cookie": "{{sessionCookie}}"},
        "test": """
status(200);
pm.test('the staff user', () => pm.expect(body.user.role).to.eql('staff'));
""",
    },
    {
        "name": "Sign-ins (session cookie) mark the current session",
        "method": "GET",
        "path": "/v1/auth/sessions",
        "headers": {"Cookie": "{{sessionCookie}}"},
        "test": """
status(200);
pm.test('exactly one current session', () => {
  pm.expect(body.filter((s) => s.kind === 'session' && s.current)).to.have.lengthOf(1);
});
""",
    },
    {
        "name": "A write with the cookie but without X-CSRF-Token → 403",
        "method": "POST",
        "path": "/v1/locations",
        "headers": {"Cookie": "{{sessionCookie}}", "Origin": "{{baseUrl}}"},
        "json": {"code": "NMC-" + RUN, "name": "Refused without CSRF"},
        "test": "problem(403, 'csrf_failed');",
    },
    {
        "name": "A write with the cookie and X-CSRF-Token → 201",
        "method": "POST",
        "path": "/v1/locations",
        "headers": {
            "Cookie": "{{sessionCookie}}",
            "Origin": "{{baseUrl}}",
            "X-CSRF-Token": "{{csrf}}",
        },
        "json": {"code": "NMC-" + RUN, "name": "Created from a session"},
        "test": """
status(201);
pm.test('the location', () => pm.expect(body.code).to.eql(pm.variables.replaceIn('NMC-{{run}}')));
""",
    },
    {
        "name": "A cross-site write with the cookie → 403",
        "method": "POST",
        "path": "/v1/locations",
        "headers": {
            "Cookie": "{{sessionCookie}}",
            "Origin": "https://evil.example",
            "X-CSRF-Token": "{{csrf}}",
        },
        "json": {"code": "NMX-" + RUN, "name": "Cross-site"},
        "test": "problem(403, 'csrf_failed');",
    },
    {
        "name": "Session sign-out",
        "method": "DELETE",
        "path": "/v1/auth/session",
        "headers": {
            "Cookie": "{{sessionCookie}}",
            "Origin": "{{baseUrl}}",
            "X-CSRF-Token": "{{csrf}}",
        },
        "test": """
status(204);
pm.test('the cookie is cleared', () => {
  const cleared = pm.response.headers.all()
    .filter((h) => h.key.toLowerCase() === 'set-cookie')
    .map((h) => h.value)
    .find((v) => v.startsWith('__Host-session='));
  pm.expect(cleared).to.match(/Max-Age=0|expires=Thu, 01 Jan 1970/i);
});
""",
    },
    {
        "name": "The signed-out cookie → 401",
        "method": "GET",
        "path": "/v1/auth/me",
        "headers": {"Cookie": "{{sessionCookie}}"},
        "test": "problem(401, 'unauthenticated');",
    },
    {
        "name": "No credentials → 401",
        "method": "GET",
        "path": "/v1/auth/me",
        "test": """
problem(401, 'unauthenticated');
pm.test('WWW-Authenticate names Bearer', () => pm.expect(header('WWW-Authenticate')).to.match(/^Bearer/));
""",
    },
    {
        "name": "Create an API key (admin)",
        "method": "POST",
        "path": "/v1/api-keys",
        "auth": "adminToken",
        "json": {"name": "newman " + RUN, "scopes": ["catalog:read", "stock:read"]},
        "test": """
status(201);
pm.test('the secret, shown once, and the scopes', () => {
  pm.expect(body.secret).to.be.a('string').with.length.above(20);
  pm.expect(body.scopes).to.have.members(['catalog:read', 'stock:read']);
});
pm.test('not cached', () => pm.expect(header('Cache-Control')).to.include('no-store'));
save('apiKey', body.secret);
save('apiKeyId', body.id);
""",
    },
    {
        "name": "Create an API key as staff → 403",
        "method": "POST",
        "path": "/v1/api-keys",
        "auth": "staffToken",
        "json": {"name": "refused", "scopes": ["catalog:read"]},
        "test": "problem(403, 'forbidden');",
    },
    {
        "name": "Create an API key with no scopes → 422",
        "method": "POST",
        "path": "/v1/api-keys",
        "auth": "adminToken",
        "json": {"name": "no scopes", "scopes": []},
        "test": "problem(422, 'validation_failed');",
    },
    {
        "name": "API keys are listed without their secret",
        "method": "GET",
        "path": "/v1/api-keys",
        "auth": "adminToken",
        "test": """
status(200);
const mine = body.find((k) => k.id === load('apiKeyId'));
pm.test('the new key is listed', () => pm.expect(mine).to.be.an('object'));
pm.test('no secret in the list', () => pm.expect(mine).to.not.have.property('secret'));
""",
    },
    {
        "name": "The API key reads stock",
        "method": "GET",
        "path": "/v1/stock?limit=1",
        "auth": "apiKey",
        "test": """
status(200);
pm.test('a page', () => pm.expect(body.data).to.be.an('array'));
""",
    },
    {
        "name": "The API key may not write the catalog → 403",
        "method": "POST",
        "path": "/v1/products",
        "auth": "apiKey",
        "json": {"sku": "NMK-" + RUN, "name": "Refused", "price_minor": 1, "currency": "EUR"},
        "test": "problem(403, 'forbidden');",
    },
    {
        "name": "Who am I (API key)",
        "method": "GET",
        "path": "/v1/auth/me",
        "auth": "apiKey",
        "test": """
status(200);
pm.test('an API key principal with its scopes', () => {
  pm.expect(body.kind).to.eql('api_key');
  pm.expect(body.scopes).to.have.members(['catalog:read', 'stock:read']);
});
""",
    },
    {
        "name": "Users (admin)",
        "method": "GET",
        "path": "/v1/users?role=customer&limit=100",
        "auth": "adminToken",
        "test": """
status(200);
pm.test('customers only', () => pm.expect(body.data.every((u) => u.role === 'customer')).to.be.true);
pm.test('a cursor page', () => pm.expect(body).to.have.keys('data', 'next_cursor', 'has_more'));
""",
    },
    {
        "name": "Users as staff → 403",
        "method": "GET",
        "path": "/v1/users",
        "auth": "staffToken",
        "test": "problem(403, 'forbidden');",
    },
    {
        "name": "User contacts (staff) by id",
        "method": "GET",
        "path": "/v1/users/contacts?id={{otherId}}",
        "auth": "staffToken",
        "test": """
status(200);
pm.test('the new customer, by id', () => {
  pm.expect(body).to.have.lengthOf(1);
  pm.expect(body[0].id).to.eql(load('otherId'));
});
""",
    },
    {
        "name": "User contacts without an id → 422",
        "method": "GET",
        "path": "/v1/users/contacts",
        "auth": "staffToken",
        "test": "problem(422, 'validation_failed');",
    },
]

CATALOG: list[Spec] = [
    {
        "name": "Create a product (staff)",
        "method": "POST",
        "path": "/v1/products",
        "auth": "staffToken",
        "json": {
            "sku": "NM-" + RUN,
            "name": "Newman mug " + RUN,
            "category": "kitchen",
            "price_minor": 1250,
            "currency": "EUR",
        },
        "test": """
status(201);
isJson();
pm.test('Location points at the product', () => pm.expect(header('Location')).to.include('/v1/products/' + body.id));
pm.test('ETag is version 1', () => pm.expect(header('ETag')).to.eql('"v1"'));
pm.test('the fields as sent', () => {
  pm.expect(body.sku).to.eql(pm.variables.replaceIn('NM-{{run}}'));
  pm.expect(body.price_minor).to.eql(1250);
  pm.expect(body.version).to.eql(1);
});
pm.test('updated_at is never before created_at', () => {
  pm.expect(Date.parse(body.updated_at)).to.be.at.least(Date.parse(body.created_at));
});
save('productId', body.id);
""",
    },
    {
        "name": "Create a second product",
        "method": "POST",
        "path": "/v1/products",
        "auth": "staffToken",
        "json": {
            "sku": "NM2-" + RUN,
            "name": "Newman plate",
            "price_minor": 800,
            "currency": "EUR",
        },
        "test": """
status(201);
pm.test('default category', () => pm.expect(body.category).to.eql('general'));
save('product2Id', body.id);
""",
    },
    {
        "name": "Same SKU again → 409",
        "method": "POST",
        "path": "/v1/products",
        "auth": "staffToken",
        "json": {"sku": "NM-" + RUN, "name": "Duplicate", "price_minor": 1, "currency": "EUR"},
        "test": "status(409);",
    },
    {
        "name": "Invalid fields → 422 listing each",
        "method": "POST",
        "path": "/v1/products",
        "auth": "staffToken",
        "json": {"sku": "-bad", "name": "", "price_minor": -1, "currency": "eur"},
        "test": """
problem(422, 'validation_failed');
pm.test('each bad field is named', () => {
  const fields = body.errors.map((e) => e.field).join(' ');
  ['sku', 'name', 'price_minor', 'currency'].forEach((f) => pm.expect(fields).to.include(f));
});
""",
    },
    {
        "name": "Malformed JSON → 400",
        "method": "POST",
        "path": "/v1/products",
        "auth": "staffToken",
        "headers": {"Content-Type": "application/json"},
        "raw": '{"sku": "NM-broken", ',
        "test": "status(400);",
    },
    {
        "name": "A non-JSON media type → 415",
        "method": "POST",
        "path": "/v1/products",
        "auth": "staffToken",
        "headers": {"Content-Type": "text/plain"},
        "raw": "sku=NM-plain",
        "test": "status(415);",
    },
    {
        "name": "Create a product as a customer → 403",
        "method": "POST",
        "path": "/v1/products",
        "auth": "customerToken",
        "json": {"sku": "NMC-" + RUN, "name": "Refused", "price_minor": 1, "currency": "EUR"},
        "test": "problem(403, 'forbidden');",
    },
    {
        "name": "Create a product anonymously → 401",
        "method": "POST",
        "path": "/v1/products",
        "json": {"sku": "NMA-" + RUN, "name": "Refused", "price_minor": 1, "currency": "EUR"},
        "test": "problem(401, 'unauthenticated');",
    },
    {
        "name": "Read the product (public, cacheable)",
        "method": "GET",
        "path": "/v1/products/{{productId}}",
        "test": """
status(200);
pm.test('ETag and a public Cache-Control', () => {
  pm.expect(header('ETag')).to.eql('"v1"');
  pm.expect(header('Cache-Control')).to.match(/^public/);
});
pm.test('the product', () => pm.expect(body.id).to.eql(load('productId')));
save('etag', header('ETag'));
""",
    },
    {
        "name": "Revalidate with If-None-Match → 304",
        "method": "GET",
        "path": "/v1/products/{{productId}}",
        "headers": {"If-None-Match": "{{etag}}"},
        "test": """
status(304);
pm.test('no body', () => pm.expect(pm.response.text()).to.eql(''));
pm.test('the ETag again', () => pm.expect(header('ETag')).to.eql(load('etag')));
""",
    },
    {
        "name": "An unknown product → 404",
        "method": "GET",
        "path": "/v1/products/" + UUID_ZERO,
        "test": "problem(404, /not_found$/);",
    },
    {
        "name": "A product id that is not a UUID → 422",
        "method": "GET",
        "path": "/v1/products/not-a-uuid",
        "test": "problem(422, 'validation_failed');",
    },
    {
        "name": "PUT on a product → 405 with the real Allow set",
        "method": "PUT",
        "path": "/v1/products/{{productId}}",
        "auth": "staffToken",
        "json": {"name": "PUT is not offered"},
        "test": """
status(405);
pm.test('Allow lists GET, PATCH and DELETE', () => {
  const allow = (header('Allow') || '').split(',').map((m) => m.trim());
  pm.expect(allow).to.include.members(['GET', 'PATCH', 'DELETE']);
  pm.expect(allow).to.not.include('PUT');
});
""",
    },
    {
        "name": "PATCH without If-Match → 428",
        "method": "PATCH",
        "path": "/v1/products/{{productId}}",
        "auth": "staffToken",
        "json": {"price_minor": 1300},
        "test": "problem(428, 'precondition_required');",
    },
    {
        "name": "PATCH with a stale If-Match → 412",
        "method": "PATCH",
        "path": "/v1/products/{{productId}}",
        "auth": "staffToken",
        "headers": {"If-Match": '"v999"'},
        "json": {"price_minor": 1300},
        "test": "problem(412, 'precondition_failed');",
    },
    {
        "name": "PATCH with the current If-Match → 200",
        "method": "PATCH",
        "path": "/v1/products/{{productId}}",
        "auth": "staffToken",
        "headers": {"If-Match": "{{etag}}"},
        "json": {"price_minor": 1300},
        "test": """
status(200);
pm.test('version 2, new ETag', () => {
  pm.expect(body.version).to.eql(2);
  pm.expect(header('ETag')).to.eql('"v2"');
});
pm.test('the change is applied', () => pm.expect(body.price_minor).to.eql(1300));
""",
    },
    {
        "name": "PATCH with If-Match: * → 200 (any current representation)",
        "method": "PATCH",
        "path": "/v1/products/{{productId}}",
        "auth": "staffToken",
        "headers": {"If-Match": "*"},
        "json": {"description": "Patched with If-Match: *"},
        "test": """
status(200);
pm.test('version 3', () => pm.expect(body.version).to.eql(3));
""",
    },
    {
        "name": "PATCH with an empty body → 422",
        "method": "PATCH",
        "path": "/v1/products/{{productId}}",
        "auth": "staffToken",
        "headers": {"If-Match": "*"},
        "json": {},
        "test": "problem(422, 'validation_failed');",
    },
    {
        "name": "List products: the first page of two",
        "method": "GET",
        "path": "/v1/products?limit=2&sort=created_at",
        "test": """
status(200);
pm.test('two products and more to come', () => {
  pm.expect(body.data).to.have.lengthOf(2);
  pm.expect(body.has_more).to.be.true;
});
const link = header('Link') || '';
const next = (link.match(/<([^>]+)>;\\s*rel="next"/) || [])[1];
pm.test('Link: rel="next" carries the cursor', () => {
  pm.expect(next).to.be.a('string').and.include('cursor=' + encodeURIComponent(body.next_cursor).slice(0, 10));
});
save('nextPage', next);
save('firstPageIds', JSON.stringify(body.data.map((p) => p.id)));
""",
    },
    {
        "name": "List products: follow Link rel=next",
        "method": "GET",
        "path": "/v1/products?limit=2&sort=created_at&cursor={{nextCursor}}",
        "pre": """
const next = pm.collectionVariables.get('nextPage');
const cursor = decodeURIComponent(next.split('cursor=')[1].split('&')[0]);
pm.collectionVariables.set('nextCursor', cursor);
""",
        "test": """
status(200);
pm.test('a new page, no product twice', () => {
  const first = JSON.parse(load('firstPageIds'));
  pm.expect(body.data.length).to.be.at.least(1);
  body.data.forEach((p) => pm.expect(first).to.not.include(p.id));
});
""",
    },
    {
        "name": "List products: a tampered cursor → 422",
        "method": "GET",
        "path": "/v1/products?cursor=tampered.cursor",
        "test": "problem(422, 'invalid_cursor');",
    },
    {
        "name": "List products: search by SKU",
        "method": "GET",
        "path": "/v1/products?q=NM-" + RUN,
        "test": """
status(200);
pm.test('finds the new product', () => pm.expect(body.data.map((p) => p.id)).to.include(load('productId')));
""",
    },
    {
        "name": "List products: limit 0 → 422",
        "method": "GET",
        "path": "/v1/products?limit=0",
        "test": "problem(422, 'validation_failed');",
    },
    {
        "name": "Upload the product image (PNG)",
        "method": "PUT",
        "path": "/v1/products/{{productId}}/image",
        "auth": "staffToken",
        "headers": {"Content-Type": "image/png"},
        "file": "postman/fixtures/pixel.png",
        "test": """
status(200);
pm.test('the image is described', () => pm.expect(body).to.be.an('object'));
""",
    },
    {
        "name": "Upload an image with a wrong media type → 415",
        "method": "PUT",
        "path": "/v1/products/{{productId}}/image",
        "auth": "staffToken",
        "headers": {"Content-Type": "text/plain"},
        "raw": "not an image",
        "test": "status(415);",
    },
    {
        "name": "Read the product image",
        "method": "GET",
        "path": "/v1/products/{{productId}}/image",
        "test": """
status(200);
pm.test('served as a PNG', () => pm.expect(header('Content-Type')).to.eql('image/png'));
pm.test('with an ETag', () => pm.expect(header('ETag')).to.be.a('string'));
save('imageEtag', header('ETag'));
""",
    },
    {
        "name": "Revalidate the image → 304",
        "method": "GET",
        "path": "/v1/products/{{productId}}/image",
        "headers": {"If-None-Match": "{{imageEtag}}"},
        "test": "status(304);",
    },
    {
        "name": "Create a location",
        "method": "POST",
        "path": "/v1/locations",
        "auth": "staffToken",
        "json": {"code": "NMA-" + RUN, "name": "Newman north", "kind": "warehouse"},
        "test": """
status(201);
pm.test('the code as sent', () => pm.expect(body.code).to.eql(pm.variables.replaceIn('NMA-{{run}}')));
save('locA', body.id);
""",
    },
    {
        "name": "Create a second location",
        "method": "POST",
        "path": "/v1/locations",
        "auth": "staffToken",
        "json": {"code": "NMB-" + RUN, "name": "Newman store", "kind": "store"},
        "test": """
status(201);
pm.test('a store', () => pm.expect(body.kind).to.eql('store'));
save('locB', body.id);
""",
    },
    {
        "name": "The same location code again → 409",
        "method": "POST",
        "path": "/v1/locations",
        "auth": "staffToken",
        "json": {"code": "NMA-" + RUN, "name": "Duplicate"},
        "test": "status(409);",
    },
    {
        "name": "List locations",
        "method": "GET",
        "path": "/v1/locations?limit=100",
        "auth": "staffToken",
        "test": """
status(200);
pm.test('a page of locations', () => pm.expect(body.data).to.be.an('array').that.is.not.empty);
""",
    },
    {
        "name": "Read a location",
        "method": "GET",
        "path": "/v1/locations/{{locA}}",
        "auth": "staffToken",
        "test": """
status(200);
pm.test('the location', () => pm.expect(body.id).to.eql(load('locA')));
""",
    },
    {
        "name": "An unknown location → 404",
        "method": "GET",
        "path": "/v1/locations/" + UUID_ZERO,
        "auth": "staffToken",
        "test": "problem(404, /not_found$/);",
    },
]

STOCK: list[Spec] = [
    {
        "name": "Receive 10 units",
        "method": "POST",
        "path": "/v1/stock/adjustments",
        "auth": "staffToken",
        "headers": key("adjustKey"),
        "pre": fresh_key("adjustKey"),
        "json": {
            "product_id": "{{productId}}",
            "location_id": "{{locA}}",
            "kind": "receipt",
            "quantity": 10,
            "reason": "newman receipt",
        },
        "test": """
status(201);
pm.test('the level has 10 on hand', () => {
  pm.expect(body.level.on_hand).to.eql(10);
  pm.expect(body.level.available).to.eql(10);
});
pm.test('a receipt movement in the ledger', () => {
  pm.expect(body.movement.kind).to.eql('receipt');
  pm.expect(body.movement.on_hand_delta).to.eql(10);
});
save('movementId', body.movement.id);
""",
    },
    {
        "name": "Replay the receipt with the same key → the same movement",
        "method": "POST",
        "path": "/v1/stock/adjustments",
        "auth": "staffToken",
        "headers": key("adjustKey"),
        "json": {
            "product_id": "{{productId}}",
            "location_id": "{{locA}}",
            "kind": "receipt",
            "quantity": 10,
            "reason": "newman receipt",
        },
        "test": """
status(201);
pm.test('replayed, not applied twice', () => {
  pm.expect(header('Idempotent-Replayed')).to.eql('true');
  pm.expect(body.movement.id).to.eql(Number(load('movementId')));
  pm.expect(body.level.on_hand).to.eql(10);
});
""",
    },
    {
        "name": "Count 3 fewer (adjustment)",
        "method": "POST",
        "path": "/v1/stock/adjustments",
        "auth": "staffToken",
        "headers": key("adjustKey2"),
        "pre": fresh_key("adjustKey2"),
        "json": {
            "product_id": "{{productId}}",
            "location_id": "{{locA}}",
            "kind": "adjustment",
            "quantity": -3,
            "reason": "newman count",
        },
        "test": """
status(201);
pm.test('7 on hand', () => pm.expect(body.level.on_hand).to.eql(7));
""",
    },
    {
        "name": "Adjust by 0 → 422",
        "method": "POST",
        "path": "/v1/stock/adjustments",
        "auth": "staffToken",
        "json": {
            "product_id": "{{productId}}",
            "location_id": "{{locA}}",
            "kind": "adjustment",
            "quantity": 0,
            "reason": "nothing",
        },
        "test": "problem(422, 'validation_failed');",
    },
    {
        "name": "Adjust below zero → 409",
        "method": "POST",
        "path": "/v1/stock/adjustments",
        "auth": "staffToken",
        "headers": key("adjustKey3"),
        "pre": fresh_key("adjustKey3"),
        "json": {
            "product_id": "{{productId}}",
            "location_id": "{{locA}}",
            "kind": "adjustment",
            "quantity": -1000,
            "reason": "too many",
        },
        "test": "status(409);",
    },
    {
        "name": "Adjust as a customer → 403",
        "method": "POST",
        "path": "/v1/stock/adjustments",
        "auth": "customerToken",
        "json": {
            "product_id": "{{productId}}",
            "location_id": "{{locA}}",
            "kind": "receipt",
            "quantity": 1,
            "reason": "refused",
        },
        "test": "problem(403, 'forbidden');",
    },
    {
        "name": "Transfer 2 units to the store",
        "method": "POST",
        "path": "/v1/stock/transfers",
        "auth": "staffToken",
        "headers": key("transferKey"),
        "pre": fresh_key("transferKey"),
        "json": {
            "product_id": "{{productId}}",
            "from_location_id": "{{locA}}",
            "to_location_id": "{{locB}}",
            "quantity": 2,
            "reason": "newman transfer",
        },
        "test": """
status(201);
pm.test('the response describes the transfer', () => pm.expect(body).to.be.an('object').that.is.not.empty);
pm.test('5 left at the warehouse, 2 at the store', () => {
  const text = JSON.stringify(body);
  pm.expect(text).to.include('"on_hand":5');
  pm.expect(text).to.include('"on_hand":2');
});
""",
    },
    {
        "name": "Transfer more than is there → 409",
        "method": "POST",
        "path": "/v1/stock/transfers",
        "auth": "staffToken",
        "headers": key("transferKey2"),
        "pre": fresh_key("transferKey2"),
        "json": {
            "product_id": "{{productId}}",
            "from_location_id": "{{locA}}",
            "to_location_id": "{{locB}}",
            "quantity": 500,
            "reason": "too many",
        },
        "test": "status(409);",
    },
    {
        "name": "Transfer to the same location → 422",
        "method": "POST",
        "path": "/v1/stock/transfers",
        "auth": "staffToken",
        "json": {
            "product_id": "{{productId}}",
            "from_location_id": "{{locA}}",
            "to_location_id": "{{locA}}",
            "quantity": 1,
            "reason": "nowhere",
        },
        "test": "status(422);",
    },
    {
        "name": "Stock levels of the product",
        "method": "GET",
        "path": "/v1/stock?product_id={{productId}}",
        "auth": "staffToken",
        "test": """
status(200);
pm.test('two locations, 7 units in all', () => {
  pm.expect(body.data).to.have.lengthOf(2);
  pm.expect(body.data.reduce((n, l) => n + l.on_hand, 0)).to.eql(7);
});
""",
    },
    {
        "name": "Stock overview by SKU (names, not ids)",
        "method": "GET",
        "path": "/v1/stock/overview?q=NM-" + RUN,
        "auth": "staffToken",
        "test": """
status(200);
pm.test('rows carry SKU, product and location names', () => {
  pm.expect(body.data.length).to.be.at.least(2);
  body.data.forEach((row) => {
    pm.expect(row.sku).to.eql(pm.variables.replaceIn('NM-{{run}}'));
    pm.expect(row.product_name).to.be.a('string');
    pm.expect(row.location_name).to.be.a('string');
  });
});
""",
    },
    {
        "name": "Ledger of the product",
        "method": "GET",
        "path": "/v1/stock/movements?product_id={{productId}}&limit=50",
        "auth": "staffToken",
        "test": """
status(200);
const kinds = body.data.map((m) => m.kind);
pm.test('receipt, adjustment and both transfer legs', () => {
  pm.expect(kinds).to.include.members(['receipt', 'adjustment', 'transfer_out', 'transfer_in']);
});
pm.test('one receipt despite the replay', () => pm.expect(kinds.filter((k) => k === 'receipt')).to.have.lengthOf(1));
pm.test('the deltas sum to the stock', () => {
  pm.expect(body.data.reduce((n, m) => n + m.on_hand_delta, 0)).to.eql(7);
});
""",
    },
    {
        "name": "Ledger as a customer → 403",
        "method": "GET",
        "path": "/v1/stock/movements",
        "auth": "customerToken",
        "test": "problem(403, 'forbidden');",
    },
]

ORDER_BODY = {"lines": [{"product_id": "{{productId}}", "quantity": 2}]}

ORDERS: list[Spec] = [
    {
        "name": "Place an order",
        "method": "POST",
        "path": "/v1/orders",
        "auth": "customerToken",
        "headers": key("orderKey"),
        "pre": fresh_key("orderKey"),
        "json": ORDER_BODY,
        "test": """
status(201);
pm.test('reserved, with its total', () => {
  pm.expect(body.status).to.eql('reserved');
  pm.expect(body.total_minor).to.eql(2600);
  pm.expect(body.currency).to.eql('EUR');
});
pm.test('Location points at the order', () => pm.expect(header('Location')).to.include('/v1/orders/' + body.id));
pm.test('a first answer, not a replay', () => pm.expect(header('Idempotent-Replayed')).to.eql('false'));
save('orderId', body.id);
""",
    },
    {
        "name": "Replay the order (same key, same body)",
        "method": "POST",
        "path": "/v1/orders",
        "auth": "customerToken",
        "headers": key("orderKey"),
        "json": ORDER_BODY,
        "test": """
status(201);
pm.test('the same order, replayed', () => {
  pm.expect(body.id).to.eql(load('orderId'));
  pm.expect(header('Idempotent-Replayed')).to.eql('true');
});
""",
    },
    {
        "name": "The same key with a changed body → 422",
        "method": "POST",
        "path": "/v1/orders",
        "auth": "customerToken",
        "headers": key("orderKey"),
        "json": {"lines": [{"product_id": "{{productId}}", "quantity": 3}]},
        "test": "problem(422, 'idempotency_key_reused');",
    },
    {
        "name": "No Idempotency-Key → 400",
        "method": "POST",
        "path": "/v1/orders",
        "auth": "customerToken",
        "json": ORDER_BODY,
        "test": "status(400);",
    },
    {
        "name": "An empty Idempotency-Key → refused",
        "method": "POST",
        "path": "/v1/orders",
        "auth": "customerToken",
        "headers": {"Idempotency-Key": '""'},
        "json": ORDER_BODY,
        "test": """
pm.test('refused (400 or 422)', () => pm.expect(pm.response.code).to.be.oneOf([400, 422]));
pm.test('the header is named', () => pm.expect(pm.response.text()).to.include('Idempotency-Key'));
""",
    },
    {
        "name": "A quoted Idempotency-Key (Structured Field string) is accepted",
        "method": "POST",
        "path": "/v1/orders",
        "auth": "customerToken",
        "headers": {"Idempotency-Key": '"{{quotedKey}}"'},
        "pre": fresh_key("quotedKey"),
        "json": {"lines": [{"product_id": "{{productId}}", "quantity": 1}]},
        "test": """
status(201);
pm.test('reserved', () => pm.expect(body.status).to.eql('reserved'));
save('order2Id', body.id);
""",
    },
    {
        "name": "More than is in stock → 409 with per-line detail",
        "method": "POST",
        "path": "/v1/orders",
        "auth": "customerToken",
        "headers": key("orderKey409"),
        "pre": fresh_key("orderKey409"),
        "json": {"lines": [{"product_id": "{{productId}}", "quantity": 999}]},
        "test": """
problem(409, 'insufficient_stock');
pm.test('each short line: product, requested, available', () => {
  pm.expect(body.lines).to.have.lengthOf(1);
  pm.expect(body.lines[0].product_id).to.eql(load('productId'));
  pm.expect(body.lines[0].requested).to.eql(999);
  pm.expect(body.lines[0].available).to.be.a('number').below(999);
});
""",
    },
    {
        "name": "An order with no lines → 422",
        "method": "POST",
        "path": "/v1/orders",
        "auth": "customerToken",
        "headers": key("orderKey422"),
        "pre": fresh_key("orderKey422"),
        "json": {"lines": []},
        "test": "problem(422, 'validation_failed');",
    },
    {
        "name": "Read my order",
        "method": "GET",
        "path": "/v1/orders/{{orderId}}",
        "auth": "customerToken",
        "test": """
status(200);
pm.test('my order with its line', () => {
  pm.expect(body.id).to.eql(load('orderId'));
  pm.expect(body.lines).to.have.lengthOf(1);
  pm.expect(body.lines[0].quantity).to.eql(2);
});
""",
    },
    {
        "name": "My orders list it",
        "method": "GET",
        "path": "/v1/orders?limit=100",
        "auth": "customerToken",
        "test": """
status(200);
pm.test('the new order is listed', () => pm.expect(body.data.map((o) => o.id)).to.include(load('orderId')));
""",
    },
    {
        "name": "Another customer's order → 404",
        "method": "GET",
        "path": "/v1/orders/{{orderId}}",
        "auth": "otherToken",
        "test": "problem(404, /not_found$/);",
    },
    {
        "name": "Another customer's list does not show it",
        "method": "GET",
        "path": "/v1/orders",
        "auth": "otherToken",
        "test": """
status(200);
pm.test('not listed', () => pm.expect(body.data.map((o) => o.id)).to.not.include(load('orderId')));
""",
    },
    {
        "name": "Another customer cancels it → 404",
        "method": "POST",
        "path": "/v1/orders/{{orderId}}/cancel",
        "auth": "otherToken",
        "test": "problem(404, /not_found$/);",
    },
    {
        "name": "Another customer confirms it → 404",
        "method": "POST",
        "path": "/v1/orders/{{orderId}}/confirm",
        "auth": "otherToken",
        "test": "problem(404, /not_found$/);",
    },
    {
        "name": "The customer confirms their order",
        "method": "POST",
        "path": "/v1/orders/{{orderId}}/confirm",
        "auth": "customerToken",
        "test": """
status(200);
pm.test('confirmed', () => pm.expect(body.status).to.eql('confirmed'));
""",
    },
    {
        "name": "Confirm it again → 409",
        "method": "POST",
        "path": "/v1/orders/{{orderId}}/confirm",
        "auth": "staffToken",
        "test": "status(409);",
    },
    {
        "name": "The customer fulfils → 403 (staff only)",
        "method": "POST",
        "path": "/v1/orders/{{orderId}}/fulfil",
        "auth": "customerToken",
        "test": "problem(403, 'forbidden');",
    },
    {
        "name": "Staff fulfil the order",
        "method": "POST",
        "path": "/v1/orders/{{orderId}}/fulfil",
        "auth": "staffToken",
        "test": """
status(200);
pm.test('fulfilled', () => pm.expect(body.status).to.eql('fulfilled'));
""",
    },
    {
        "name": "Cancel a fulfilled order → 409",
        "method": "POST",
        "path": "/v1/orders/{{orderId}}/cancel",
        "auth": "staffToken",
        "test": "status(409);",
    },
    {
        "name": "The customer cancels the second order",
        "method": "POST",
        "path": "/v1/orders/{{order2Id}}/cancel",
        "auth": "customerToken",
        "test": """
status(200);
pm.test('cancelled', () => pm.expect(body.status).to.eql('cancelled'));
""",
    },
    {
        "name": "Fulfil a cancelled order → 409",
        "method": "POST",
        "path": "/v1/orders/{{order2Id}}/fulfil",
        "auth": "staffToken",
        "test": "status(409);",
    },
    {
        "name": "Staff list cancelled orders",
        "method": "GET",
        "path": "/v1/orders?status=cancelled&limit=100",
        "auth": "staffToken",
        "test": """
status(200);
pm.test('only cancelled ones, including ours', () => {
  pm.expect(body.data.every((o) => o.status === 'cancelled')).to.be.true;
});
""",
    },
    {
        "name": "Stock after fulfilment and cancellation",
        "method": "GET",
        "path": "/v1/stock?product_id={{productId}}&location_id={{locA}}",
        "auth": "staffToken",
        "test": """
status(200);
pm.test('2 shipped, nothing left reserved', () => {
  pm.expect(body.data[0].on_hand).to.eql(3);
  pm.expect(body.data[0].reserved).to.eql(0);
});
""",
    },
]

IMPORTS: list[Spec] = [
    {
        "name": "Start a CSV import",
        "method": "POST",
        "path": "/v1/imports",
        "auth": "staffToken",
        "headers": {"Content-Type": "text/csv"},
        # Line 2 is imported with 12 units at the run's warehouse; line 3 is refused.
        "raw": "sku,name,category,price_minor,currency,location,on_hand\n"
        "NMI-" + RUN + ",Imported lamp,lighting,2500,EUR,NMA-" + RUN + ",12\n"
        "NMJ-" + RUN + ",Bad price,lighting,abc,EUR,,\n",
        "test": """
status(202);
pm.test('the job, and where to follow it', () => {
  pm.expect(body.task).to.eql('import_products');
  pm.expect(header('Location')).to.include('/v1/jobs/' + body.id);
});
pm.test('no server path is shown', () => pm.expect(pm.response.text()).to.not.match(/\\/(tmp|var|home|srv)\\//));
save('jobId', body.id);
""",
    },
    {
        "name": "An import with a JSON body → 415",
        "method": "POST",
        "path": "/v1/imports",
        "auth": "staffToken",
        "json": {"sku": "NMI-json"},
        "test": "status(415);",
    },
    {
        "name": "An import with no body → refused at once",
        "method": "POST",
        "path": "/v1/imports",
        "auth": "staffToken",
        "headers": {"Content-Type": "text/csv"},
        "test": """
pm.test('400, 415 or 422, never 202', () => pm.expect(pm.response.code).to.be.oneOf([400, 415, 422]));
pm.test('no server path is shown', () => pm.expect(pm.response.text()).to.not.match(/\\/(tmp|var|home|srv)\\//));
""",
    },
    {
        "name": "An import as a customer → 403",
        "method": "POST",
        "path": "/v1/imports",
        "auth": "customerToken",
        "headers": {"Content-Type": "text/csv"},
        "raw": "sku,name,price_minor,currency\nX,Y,1,EUR\n",
        "test": "problem(403, 'forbidden');",
    },
    {
        "name": "Follow the import job until it finishes",
        "method": "GET",
        "path": "/v1/jobs/{{jobId}}",
        "auth": "staffToken",
        # Repeats itself every 250 ms (setNextRequest) until the worker has run the job.
        "test": """
const attempt = Number(load('jobPolls') || 0) + 1;
save('jobPolls', attempt);
status(200);
const finished = ['succeeded', 'failed', 'cancelled', 'aborted'].includes(body.status);
if (!finished && attempt < 120) {
  postman.setNextRequest(pm.info.requestName);
  setTimeout(() => {}, 250);
} else {
  pm.test('the job succeeded (a worker ran it within ~30 s)', () => pm.expect(body.status).to.eql('succeeded'));
  const report = JSON.parse(body.progress.message);
  pm.test('progress: both rows read, the total known', () => {
    pm.expect(body.progress.done).to.eql(2);
    pm.expect(body.progress.total).to.eql(2);
    pm.expect(report.lines).to.eql(2);
  });
  pm.test('the report: one imported, one refused', () => {
    pm.expect(report.imported).to.eql(1);
    pm.expect(report.created).to.eql(1);
    pm.expect(report.bad).to.eql(1);
    pm.expect(report.stock_changed).to.eql(1);
  });
  pm.test('the refused line is numbered as in the file (header = 1)', () => {
    pm.expect(report.errors).to.have.lengthOf(1);
    pm.expect(report.errors[0].line).to.eql(3);
    pm.expect(report.errors[0].error).to.include('price_minor');
  });
  pm.test('no server path in the job', () => pm.expect(pm.response.text()).to.not.match(/\\/(tmp|var|home|srv)\\//));
}
""",
    },
    {
        "name": "The imported product and its stock",
        "method": "GET",
        "path": "/v1/stock/overview?q=NMI-" + RUN,
        "auth": "staffToken",
        "test": """
status(200);
pm.test('12 units at the warehouse of this run', () => {
  pm.expect(body.data).to.have.lengthOf(1);
  pm.expect(body.data[0].on_hand).to.eql(12);
  pm.expect(body.data[0].location_code).to.eql(pm.variables.replaceIn('NMA-{{run}}'));
});
""",
    },
    {
        "name": "The refused line wrote nothing",
        "method": "GET",
        "path": "/v1/products?q=NMJ-" + RUN,
        "test": """
status(200);
pm.test('no such product', () => pm.expect(body.data).to.have.lengthOf(0));
""",
    },
    {
        "name": "The import's stock change is in the ledger, with its line",
        "method": "GET",
        "path": "/v1/stock/movements?location_id={{locA}}&kind=adjustment&limit=50",
        "auth": "staffToken",
        "test": """
status(200);
pm.test('an adjustment referencing the job, reason naming line 2', () => {
  const mine = body.data.filter((m) => m.reference === 'import:' + load('jobId'));
  pm.expect(mine).to.have.lengthOf(1);
  pm.expect(mine[0].on_hand_delta).to.eql(12);
  pm.expect(mine[0].reason).to.include('line 2');
});
""",
    },
    {
        "name": "An unknown job → 404",
        "method": "GET",
        "path": "/v1/jobs/2147483000",
        "auth": "staffToken",
        "test": "problem(404, /not_found$/);",
    },
    {
        "name": "Jobs (admin)",
        "method": "GET",
        "path": "/v1/admin/jobs?queue=imports&limit=100",
        "auth": "adminToken",
        "test": """
status(200);
pm.test('the import job is listed', () => pm.expect(body.data.map((j) => j.id)).to.include(Number(load('jobId'))));
""",
    },
    {
        "name": "Jobs as staff → 403",
        "method": "GET",
        "path": "/v1/admin/jobs",
        "auth": "staffToken",
        "test": "problem(403, 'forbidden');",
    },
    {
        "name": "Retry a job that has not failed → 409",
        "method": "POST",
        "path": "/v1/admin/jobs/{{jobId}}/retry",
        "auth": "adminToken",
        "test": "status(409);",
    },
    {
        "name": "Debug: running tasks (admin)",
        "method": "GET",
        "path": "/v1/admin/debug/tasks",
        "auth": "adminToken",
        "test": """
pm.test('200, or 404 where debug endpoints are off (production)', () => pm.expect(pm.response.code).to.be.oneOf([200, 404]));
""",
    },
    {
        "name": "Debug: a one-second profile (admin)",
        "method": "GET",
        "path": "/v1/admin/debug/profile?seconds=1&format=speedscope",
        "auth": "adminToken",
        "test": """
pm.test('200 (or 409 while another profile runs, 404 when off)', () => pm.expect(pm.response.code).to.be.oneOf([200, 404, 409]));
""",
    },
    {
        "name": "Debug as staff → 403 (or 404 when off)",
        "method": "GET",
        "path": "/v1/admin/debug/tasks",
        "auth": "staffToken",
        "test": "pm.test('refused', () => pm.expect(pm.response.code).to.be.oneOf([403, 404]));",
    },
]

WEBHOOKS: list[Spec] = [
    {
        "name": "Create a webhook",
        "method": "POST",
        "path": "/v1/webhooks",
        "auth": "adminToken",
        "json": {
            "url": "{{webhookUrl}}",
            "event_types": ["order.confirmed", "order.cancelled"],
            "description": "newman " + RUN,
        },
        "test": """
status(201);
pm.test('the signing secret, shown once', () => pm.expect(body.secret).to.be.a('string').with.length.above(15));
save('webhookId', body.id);
save('webhookSecret', body.secret);
""",
    },
    {
        "name": "Create a webhook with a host that is not a DNS name → 422",
        "method": "POST",
        "path": "/v1/webhooks",
        "auth": "adminToken",
        "json": {"url": "http://a..b/hook", "event_types": ["*"]},
        "test": "status(422);",
    },
    {
        "name": "Create a webhook with a 64-character label → 422",
        "method": "POST",
        "path": "/v1/webhooks",
        "auth": "adminToken",
        "json": {"url": "http://" + "a" * 64 + ".example/hook", "event_types": ["*"]},
        "test": "status(422);",
    },
    {
        "name": "Create a webhook as staff → 403",
        "method": "POST",
        "path": "/v1/webhooks",
        "auth": "staffToken",
        "json": {"url": "{{webhookUrl}}", "event_types": ["*"]},
        "test": "problem(403, 'forbidden');",
    },
    {
        "name": "List webhooks",
        "method": "GET",
        "path": "/v1/webhooks",
        "auth": "adminToken",
        "test": """
status(200);
pm.test('ours is listed, without its secret', () => {
  const text = pm.response.text();
  pm.expect(text).to.include(load('webhookId'));
  pm.expect(text).to.not.include(load('webhookSecret'));
});
""",
    },
    {
        "name": "Read the webhook",
        "method": "GET",
        "path": "/v1/webhooks/{{webhookId}}",
        "auth": "adminToken",
        "test": """
status(200);
pm.test('ours', () => pm.expect(body.id).to.eql(load('webhookId')));
""",
    },
]


WEBHOOK_DELIVERIES: list[Spec] = [
    {
        "name": "Delivery log: the order events arrive",
        "method": "GET",
        "path": "/v1/webhooks/{{webhookId}}/deliveries?limit=50",
        "auth": "adminToken",
        # Repeats itself every 250 ms until the worker has fanned the orders' events out.
        "test": """
const attempt = Number(load('deliveryPolls') || 0) + 1;
save('deliveryPolls', attempt);
status(200);
const types = (body.data || []).map((d) => d.event_type);
const arrived = types.includes('order.confirmed') && types.includes('order.cancelled');
if (!arrived && attempt < 120) {
  postman.setNextRequest(pm.info.requestName);
  setTimeout(() => {}, 250);
} else {
  pm.test('a delivery per subscribed order event (confirmed, cancelled)', () => {
    pm.expect(types).to.include.members(['order.confirmed', 'order.cancelled']);
  });
  pm.test('only subscribed event types', () => {
    types.forEach((t) => pm.expect(['order.confirmed', 'order.cancelled']).to.include(t));
  });
  pm.test('each delivery: its webhook, a status, attempts', () => {
    body.data.forEach((d) => {
      pm.expect(d.subscription_id).to.eql(load('webhookId'));
      pm.expect(d.status).to.be.a('string');
      pm.expect(d.attempts).to.be.a('number');
    });
  });
  save('deliveryId', body.data[0].id);
}
""",
    },
    {
        "name": "Redeliver a delivery → 202",
        "method": "POST",
        "path": "/v1/webhooks/{{webhookId}}/deliveries/{{deliveryId}}/redeliver",
        "auth": "adminToken",
        "test": """
status(202);
pm.test('the same delivery, pending again', () => {
  pm.expect(body.id).to.eql(Number(load('deliveryId')));
  pm.expect(body.status).to.eql('pending');
});
""",
    },
    {
        "name": "Redeliver as staff → 403",
        "method": "POST",
        "path": "/v1/webhooks/{{webhookId}}/deliveries/{{deliveryId}}/redeliver",
        "auth": "staffToken",
        "test": "problem(403, 'forbidden');",
    },
    {
        "name": "Pause the webhook",
        "method": "PATCH",
        "path": "/v1/webhooks/{{webhookId}}",
        "auth": "adminToken",
        "json": {"paused": True},
        "test": """
status(200);
pm.test('paused', () => pm.expect(body.status).to.eql('paused'));
""",
    },
    {
        "name": "Redeliver while paused → 409",
        "method": "POST",
        "path": "/v1/webhooks/{{webhookId}}/deliveries/{{deliveryId}}/redeliver",
        "auth": "adminToken",
        "test": "problem(409, 'webhook_not_active');",
    },
    {
        "name": "Change the URL to one that cannot be resolved → 422",
        "method": "PATCH",
        "path": "/v1/webhooks/{{webhookId}}",
        "auth": "adminToken",
        "json": {"url": "http://a..b/hook"},
        "test": "status(422);",
    },
    {
        "name": "Rotate the signing secret",
        "method": "POST",
        "path": "/v1/webhooks/{{webhookId}}/rotate-secret",
        "auth": "adminToken",
        "json": {"grace_seconds": 0},
        "test": """
status(200);
pm.test('a new secret', () => {
  pm.expect(body.secret).to.be.a('string').and.not.eql(load('webhookSecret'));
});
""",
    },
    {
        "name": "Resume the webhook",
        "method": "PATCH",
        "path": "/v1/webhooks/{{webhookId}}",
        "auth": "adminToken",
        "json": {"paused": False},
        "test": """
status(200);
pm.test('active again', () => pm.expect(body.status).to.eql('active'));
""",
    },
    {
        "name": "Delivery log",
        "method": "GET",
        "path": "/v1/webhooks/{{webhookId}}/deliveries?limit=10",
        "auth": "adminToken",
        "test": """
status(200);
pm.test('a page of deliveries', () => pm.expect(body.data).to.be.an('array'));
""",
    },
    {
        "name": "Redeliver an unknown delivery → 404",
        "method": "POST",
        "path": "/v1/webhooks/{{webhookId}}/deliveries/2147483000/redeliver",
        "auth": "adminToken",
        "test": "problem(404, /not_found$/);",
    },
    {
        "name": "Delete the webhook",
        "method": "DELETE",
        "path": "/v1/webhooks/{{webhookId}}",
        "auth": "adminToken",
        "test": "status(204);",
    },
    {
        "name": "The deleted webhook → 404",
        "method": "GET",
        "path": "/v1/webhooks/{{webhookId}}",
        "auth": "adminToken",
        "test": "problem(404, /not_found$/);",
    },
]

LIVE: list[Spec] = [
    {
        "name": "Long-poll without a position: the current one, at once",
        "method": "GET",
        "path": "/v1/poll?channels=stock,orders",
        "auth": "staffToken",
        "test": """
status(200);
pm.test('no events, a position to start from', () => {
  pm.expect(body.events).to.eql([]);
  pm.expect(body.position).to.be.a('number').at.least(0);
});
pm.test('not cached', () => pm.expect(header('Cache-Control')).to.include('no-store'));
save('position', body.position);
""",
    },
    {
        "name": "Long-poll from the head with timeout=0 → 204",
        "method": "GET",
        "path": "/v1/poll?channels=stock:{{product2Id}}&since={{position}}&timeout=0",
        "auth": "staffToken",
        "test": """
status(204);
pm.test('X-Stream-Position says where to resume', () => pm.expect(Number(header('X-Stream-Position'))).to.be.at.least(Number(load('position'))));
""",
    },
    {
        "name": "Long-poll wakes on a stock change",
        "method": "GET",
        "path": "/v1/poll?channels=stock:{{productId}}&since={{pollSince}}&timeout=20",
        "auth": "staffToken",
        # The change is made once, just before the first poll; its event reaches the poll
        # through the outbox relay (the worker), as on any Shelfwise. A poll answered by an
        # older event of the product polls again from the position it returned.
        "pre": """
if (!load('liveOnHand')) {
  save('pollSince', load('position'));
  pm.sendRequest({
    url: pm.variables.replaceIn('{{baseUrl}}/v1/stock/adjustments'),
    method: 'POST',
    header: {
      'Content-Type': 'application/json',
      'Authorization': 'Bearer ' + load('staffToken'),
      'Idempotency-Key': 'nm-' + pm.variables.replaceIn('{{$guid}}'),
    },
    body: {mode: 'raw', raw: JSON.stringify({
      product_id: load('productId'), location_id: load('locB'), kind: 'receipt', quantity: 1,
      reason: 'newman live update',
    })},
  }, (err, res) => {
    pm.test('the stock change is accepted', () => pm.expect(res.code).to.eql(201));
    save('liveOnHand', res.json().level.on_hand);
  });
}
""",
        "test": """
status(200);
const attempt = Number(load('livePolls') || 0) + 1;
save('livePolls', attempt);
const mine = (body.events || []).filter((e) => e.type === 'stock.changed'
  && e.data.location_id === load('locB') && e.data.on_hand === Number(load('liveOnHand')));
if (!mine.length && attempt < 5) {
  save('pollSince', body.position);
  postman.setNextRequest(pm.info.requestName);
} else {
  pm.test('the change arrives as a stock.changed event of the product', () => {
    pm.expect(mine.length).to.be.at.least(1);
    pm.expect(mine[0].data.product_id).to.eql(load('productId'));
  });
  pm.test('absolute counters and the level version, not deltas', () => {
    pm.expect(mine[0].data.available).to.eql(mine[0].data.on_hand - mine[0].data.reserved);
    pm.expect(mine[0].data.level_version).to.be.a('number');
  });
  pm.test('positions increase past since', () => {
    pm.expect(mine[0].position).to.be.above(Number(load('position')));
    pm.expect(body.position).to.be.at.least(mine[0].position);
  });
}
""",
    },
    {
        "name": "Long-poll from a position ahead of the stream → 410",
        "method": "GET",
        "path": "/v1/poll?channels=stock&since=999999999999&timeout=0",
        "auth": "staffToken",
        "test": """
problem(410, 'position_too_old');
pm.test('points at the snapshot to reload', () => pm.expect(body.snapshot).to.be.a('string'));
""",
    },
    {
        "name": "Long-poll with an empty channel list → 422",
        "method": "GET",
        "path": "/v1/poll?channels=",
        "auth": "staffToken",
        "test": "status(422);",
    },
    {
        "name": "Long-poll on an unknown channel → refused",
        "method": "GET",
        "path": "/v1/poll?channels=weather",
        "auth": "staffToken",
        "test": "pm.test('400 or 422', () => pm.expect(pm.response.code).to.be.oneOf([400, 422]));",
    },
    {
        "name": "Import progress channel as a customer → 403",
        "method": "GET",
        "path": "/v1/poll?channels=imports:{{jobId}}",
        "auth": "customerToken",
        "test": "problem(403, 'forbidden');",
    },
    {
        "name": "Create a stock-reading API key for the stream",
        "method": "POST",
        "path": "/v1/api-keys",
        "auth": "adminToken",
        "json": {"name": "newman stream " + RUN, "scopes": ["stock:read"]},
        "test": """
status(201);
save('streamKey', body.secret);
save('streamKeyId', body.id);
""",
    },
    {
        "name": "SSE: headers and events; revoking the key closes the stream",
        "method": "GET",
        "path": "/v1/stream?channels=stock",
        "auth": "streamKey",
        # The stream itself is opened here, alongside a revocation a moment later: the
        # server re-checks open streams' credentials (live_recheck_seconds) and ends this
        # one with `event: close`, so the response completes. The request proper then
        # shows that the revoked key is refused.
        "pre": """
const base = pm.variables.replaceIn('{{baseUrl}}');
pm.sendRequest({
  url: base + '/v1/stream?channels=stock&since=' + pm.collectionVariables.get('position'),
  method: 'GET',
  header: {Authorization: 'Bearer ' + pm.collectionVariables.get('streamKey'), Accept: 'text/event-stream'},
}, (err, res) => {
  pm.test('SSE: the stream opened (200)', () => pm.expect(err).to.be.null && pm.expect(res.code).to.eql(200));
  pm.test('SSE: text/event-stream', () => pm.expect(res.headers.get('Content-Type')).to.match(/^text\\/event-stream/));
  pm.test('SSE: Cache-Control no-cache, no-transform', () => pm.expect(res.headers.get('Cache-Control')).to.include('no-cache'));
  pm.test('SSE: X-Accel-Buffering no', () => pm.expect(res.headers.get('X-Accel-Buffering')).to.eql('no'));
  const text = res.text();
  pm.test('SSE: starts with a retry hint', () => pm.expect(text).to.match(/^retry: \\d+\\n\\n/));
  pm.test('SSE: resumed from since, the stock change arrives with its id', () => {
    pm.expect(text).to.match(/id: \\d+\\nevent: stock\\.changed\\ndata: \\{/);
  });
  pm.test('SSE: ends with event: close (revoked)', () => {
    pm.expect(text).to.include('event: close');
    pm.expect(text).to.include('"reason":"revoked"');
  });
});
setTimeout(() => pm.sendRequest({
  url: base + '/v1/api-keys/' + pm.collectionVariables.get('streamKeyId'),
  method: 'DELETE',
  header: {Authorization: 'Bearer ' + pm.collectionVariables.get('adminToken')},
}, (err, res) => pm.test('SSE: the key is revoked mid-stream', () => pm.expect(res.code).to.eql(200))), 750);
""",
        "test": """
problem(401, 'unauthenticated');
pm.test('the revoked key is named as the reason', () => pm.expect(body.reason).to.eql('invalid_api_key'));
""",
    },
    {
        "name": "SSE without credentials → 401",
        "method": "GET",
        "path": "/v1/stream?channels=stock",
        "test": "problem(401, 'unauthenticated');",
    },
    {
        "name": "SSE on the orders channel with a stock-only key → 403",
        "method": "GET",
        "path": "/v1/stream?channels=orders",
        "auth": "apiKey",
        "test": "problem(403, 'forbidden');",
    },
]

RATE_LIMITS: list[Spec] = [
    {
        "name": "Failed logins of one account until 429",
        "method": "POST",
        "path": "/v1/auth/login",
        "json": {
            "email": "newman-locked-" + RUN + "@example.com",
            "password": "wrong-password-each-time",
        },
        # Repeats itself (setNextRequest) until the account's lockout answers 429; capped.
        "test": """
const attempt = Number(load('lockoutAttempts') || 0) + 1;
save('lockoutAttempts', attempt);
pm.test('401 until locked, then 429', () => pm.expect(pm.response.code).to.be.oneOf([401, 429]));
if (pm.response.code === 429) {
  pm.test('Retry-After in whole seconds', () => pm.expect(Number(header('Retry-After'))).to.be.at.least(1));
  pm.test('RateLimit-Policy names the policy, quota and window', () => {
    pm.expect(header('RateLimit-Policy')).to.match(/^"[a-z_]+";q=\\d+;w=\\d+$/);
  });
  pm.test('RateLimit: nothing remaining', () => pm.expect(header('RateLimit')).to.match(/;r=0;t=\\d+$/));
  pm.test('a rate_limited problem', () => pm.expect(body.code).to.eql('rate_limited'));
  pm.test('locked within 30 attempts', () => pm.expect(attempt).to.be.at.most(30));
} else if (attempt < 30) {
  postman.setNextRequest(pm.info.requestName);
} else {
  pm.test('never locked after 30 attempts', () => pm.expect.fail());
}
""",
    },
    {
        "name": "The locked account is refused even with any password",
        "method": "POST",
        "path": "/v1/auth/login",
        "json": {"email": "newman-locked-" + RUN + "@example.com", "password": "another-wrong-one"},
        "test": """
problem(429, 'rate_limited');
pm.test('Retry-After', () => pm.expect(header('Retry-After')).to.match(/^\\d+$/));
""",
    },
    {
        "name": "Responses within the limit carry RateLimit headers",
        "method": "GET",
        "path": "/v1/products?limit=1",
        "test": """
status(200);
pm.test('RateLimit-Policy and RateLimit', () => {
  pm.expect(header('RateLimit-Policy')).to.match(/q=\\d+;w=\\d+/);
  pm.expect(header('RateLimit')).to.match(/r=\\d+;t=\\d+/);
});
""",
    },
]

CONTRACT: list[Spec] = [
    {
        "name": "CORS preflight from a listed origin",
        "method": "OPTIONS",
        "path": "/v1/products/{{productId}}",
        "headers": {
            "Origin": "{{corsOrigin}}",
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization, content-type, if-match",
        },
        "test": """
const origin = pm.variables.get('corsOrigin');
if (origin) {
  status(200);
  pm.test('the origin is allowed', () => pm.expect(header('Access-Control-Allow-Origin')).to.eql(origin));
  pm.test('PATCH and If-Match are allowed', () => {
    pm.expect(header('Access-Control-Allow-Methods')).to.include('PATCH');
    pm.expect(header('Access-Control-Allow-Headers').toLowerCase()).to.include('if-match');
  });
} else {
  pm.test('no corsOrigin set: CORS is off, the preflight is refused', () => pm.expect(pm.response.code).to.be.oneOf([403, 405]));
}
""",
    },
    {
        "name": "CORS preflight from an unlisted origin → refused cleanly",
        "method": "OPTIONS",
        "path": "/v1/products",
        "headers": {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        "test": """
pm.test('403 (405 where CORS is off)', () => pm.expect(pm.response.code).to.be.oneOf([403, 405]));
pm.test('no Access-Control-Allow-Origin', () => pm.expect(header('Access-Control-Allow-Origin')).to.be.undefined);
""",
    },
    {
        "name": "The API docs work offline (no CDN assets)",
        "method": "GET",
        "path": "/docs",
        "test": """
status(200);
pm.test('an HTML page', () => pm.expect(header('Content-Type')).to.match(/^text\\/html/));
pm.test('every script and stylesheet is served by Shelfwise', () => {
  const assets = pm.response.text().match(/(?:src|href)="[^"]+"/g) || [];
  pm.expect(assets.length).to.be.above(0);
  assets.forEach((a) => pm.expect(a).to.not.match(/="(https?:)?\\/\\//));
});
""",
    },
    {
        "name": "A NUL byte in a name → 422, never a 5xx",
        "method": "POST",
        "path": "/v1/products",
        "auth": "staffToken",
        "json": {"sku": "NMN-" + RUN, "name": "nul\u0000byte", "price_minor": 1, "currency": "EUR"},
        "test": "problem(422, 'validation_failed');",
    },
    {
        "name": "An unknown path → 404 problem",
        "method": "GET",
        "path": "/v1/no-such-thing",
        "test": "status(404);",
    },
    {
        "name": "OpenAPI document",
        "method": "GET",
        "path": "/openapi.json",
        "test": """
status(200);
pm.test('OpenAPI 3 with the API paths', () => {
  pm.expect(body.openapi).to.match(/^3\\./);
  pm.expect(body.paths).to.have.property('/v1/orders');
});
""",
    },
    {
        "name": "Delete a product with a stale If-Match → 412",
        "method": "DELETE",
        "path": "/v1/products/{{product2Id}}",
        "auth": "staffToken",
        "headers": {"If-Match": '"v999"'},
        "test": "problem(412, 'precondition_failed');",
    },
    {
        "name": "Delete a product",
        "method": "DELETE",
        "path": "/v1/products/{{product2Id}}",
        "auth": "staffToken",
        "headers": {"If-Match": '"v1"'},
        "test": "status(204);",
    },
    {
        "name": "The deleted product → 404",
        "method": "GET",
        "path": "/v1/products/{{product2Id}}",
        "test": "problem(404, /not_found$/);",
    },
    {
        "name": "End the new customer's sign-ins (admin)",
        "method": "DELETE",
        "path": "/v1/users/{{otherId}}/sessions",
        "auth": "adminToken",
        "test": """
status(200);
pm.test('a count of ended sign-ins', () => pm.expect(JSON.stringify(body)).to.match(/\\d/));
""",
    },
    {
        "name": "Deactivate the new customer (admin)",
        "method": "PATCH",
        "path": "/v1/users/{{otherId}}",
        "auth": "adminToken",
        "json": {"is_active": False},
        "test": """
status(200);
pm.test('inactive', () => pm.expect(body.is_active).to.be.false);
""",
    },
    {
        "name": "A deactivated customer cannot log in",
        "method": "POST",
        "path": "/v1/auth/login",
        "json": {"email": NEW_EMAIL, "password": NEW_PASSWORD},
        "test": "status(401);",
    },
    {
        "name": "Staff may not change roles → 403",
        "method": "PATCH",
        "path": "/v1/users/{{otherId}}",
        "auth": "staffToken",
        "json": {"role": "admin"},
        "test": "problem(403, 'forbidden');",
    },
    {
        "name": "Revoke the first API key",
        "method": "DELETE",
        "path": "/v1/api-keys/{{apiKeyId}}",
        "auth": "adminToken",
        "test": """
status(200);
pm.test('revoked', () => pm.expect(body.revoked_at).to.be.a('string'));
""",
    },
    {
        "name": "The revoked API key → 401",
        "method": "GET",
        "path": "/v1/stock?limit=1",
        "auth": "apiKey",
        "test": "problem(401, 'unauthenticated');",
    },
]

FOLDERS: list[tuple[str, list[Spec]]] = [
    ("setup", SETUP),
    ("auth", AUTH),
    ("catalog", CATALOG),
    ("stock", STOCK),
    ("webhooks", WEBHOOKS),
    ("orders", ORDERS),
    ("imports and jobs", IMPORTS),
    ("webhook deliveries", WEBHOOK_DELIVERIES),
    ("live", LIVE),
    ("rate limits", RATE_LIMITS),
    ("contract and clean-up", CONTRACT),
]
