"""French for the messages the workspace shows that are made at run time: refusals and
validation errors from the domain and the API (bridge/core, bridge/web/access.py, …), which
name a ticket, a person, a group or a field, so no fixed entry of i18n.FRENCH can hold them.

Each entry is the English message as a pattern (its variable parts named) and the French
with the same names; a message that matches none shows in English. The API keeps its
English messages: clients may match on them, and the error `code` is what they should use.
tests/test_workspace_messages.py makes each message below at its source and reads it back
in French, so a change of the English text cannot leave its translation behind unnoticed.
"""

from __future__ import annotations

import functools
import re

# Fixed messages (no variable part) that reach the pages.
FRENCH_MESSAGES: dict[str, str] = {
    "a closed ticket cannot change": "un ticket fermé ne change plus",
    "a ticket never goes back to new": "un ticket ne revient jamais au statut nouveau",
    "the messaging session has already ended": "la session de messagerie est déjà terminée",
    "the ticket is closed: nothing more goes out on it":
        "le ticket est fermé : plus rien ne part dessus",
    "the messaging session was ended: nothing more goes out on it (add an internal note "
    "instead); the customer's next message opens a new ticket":
        "la session de messagerie est terminée : plus rien ne part dessus (ajoutez plutôt "
        "une note interne) ; le prochain message du client ouvre un nouveau ticket",
    "the customer opted out of messages": "le client ne veut plus recevoir de messages",
    "your role cannot assign tickets": "votre rôle ne permet pas d'assigner des tickets",
    "agents cannot move tickets between groups":
        "les agents ne déplacent pas de tickets d'un groupe à l'autre",
    "agents take unassigned tickets and release their own; ask a manager":
        "les agents prennent les tickets non assignés et libèrent les leurs ; demandez à un "
        "responsable",
    "this deployment does not use the on-hold status":
        "ce déploiement n'utilise pas le statut suspendu",
    "this deployment does not use the on-hold status (config/teams.toml [tickets] "
    "hold_enabled)":
        "ce déploiement n'utilise pas le statut suspendu (config/teams.toml [tickets] "
        "hold_enabled)",
    "assignee must be a string of at most 100 characters (or null)":
        "l'assigné doit être un texte d'au plus 100 caractères (ou personne)",
    "missing or wrong CSRF token: reload the page":
        "jeton CSRF absent ou erroné : rechargez la page",
    "missing or wrong CSRF token: reload the sign-in page":
        "jeton CSRF absent ou erroné : rechargez la page de connexion",
    "version must be a version number": "la version doit être un numéro de version",
    "job_id must name a failed job": "job_id doit désigner une tâche en échec",
    "available must be 0 or 1": "available doit valoir 0 ou 1",
    "To must be a date (2024-05-01)": "« Au » doit être une date (2024-05-01)",
    "From must be on or before To": "« Du » doit précéder « Au » ou lui être égal",
    "since and until fall within the same hour: reports count whole hours (period ends "
    "are taken to the hour)":
        "le début et la fin tombent dans la même heure : les rapports comptent des heures "
        "entières (les bornes sont prises à l'heure)",
    "Method Not Allowed": "Méthode non autorisée",
    "Forbidden": "Interdit",
    "Request Entity Too Large": "Requête trop volumineuse",
    # The macro editor's checks (bridge/core/macros.py), after "<field>: ".
    "must be a string": "doit être un texte",
    "must be a list of strings": "doit être une liste de textes",
    "must be true or false": "doit valoir true ou false",
    "must be an object": "doit être un objet",
    "actions: nested too deep": "actions : trop imbriqué",
    "From must be a date (2024-05-01) or an ISO 8601 time":
        "« Du » doit être une date (2024-05-01) ou une heure ISO 8601",
    "From must be between 1970 and 9000": "« Du » doit être entre 1970 et 9000",
    "needs actions.content_sid": "nécessite actions.content_sid",
    "needs actions.fallback_content_sid": "nécessite actions.fallback_content_sid",
    "every locale needs a text (or leave all of them out)":
        "chaque langue a besoin d'un texte (ou n'en donnez aucune)",
    "a macro needs a text in at least one locale or an action":
        "une macro a besoin d'un texte dans au moins une langue, ou d'une action",
    "must be a Twilio Content SID (HX followed by 32 hex digits)":
        "doit être un Content SID Twilio (HX suivi de 32 chiffres hexadécimaux)",
}

# (English pattern, French): the French names the pattern's groups.
_PATTERNS: list[tuple[str, str]] = [
    (r"ticket (?P<id>\d+) is assigned to (?P<who>[\w.@-]+): only they or a manager can work it",
     "le ticket {id} est assigné à {who} : seuls cette personne ou un responsable peuvent "
     "le traiter"),
    (r"ticket (?P<id>\d+) belongs to group (?P<group>[\w.-]+), which is not yours",
     "le ticket {id} appartient au groupe {group}, qui n'est pas le vôtre"),
    (r"the (?P<role>\w+) role cannot work tickets",
     "le rôle {role} ne permet pas de traiter des tickets"),
    (r"group must name a group \(GET /api/v1/groups\); (?P<group>'[^']*') is not one",
     "le groupe doit être un groupe existant (GET /api/v1/groups) ; {group} n'en est pas un"),
    (r"assignee must name an agent \(BRIDGE_AGENT_TOKENS or GET /api/v1/agents, not "
     r"read-only\) or be null; (?P<who>'[^']*'|\"[^\"]*\") is not one",
     "l'assigné doit être un agent (BRIDGE_AGENT_TOKENS ou GET /api/v1/agents, pas en "
     "lecture seule) ou personne ; {who} n'en est pas un"),
    (r"fill these fields to solve: (?P<fields>[\w., -]+)",
     "remplissez ces champs pour résoudre : {fields}"),
    (r"(?P<who>[\w.@-]+) is not a member of group (?P<group>[\w.-]+)",
     "{who} n'est pas membre du groupe {group}"),
    (r"a manager assigns within their groups \((?P<groups>[\w., -]*)\)",
     "un responsable assigne dans ses groupes ({groups})"),
    (r"(?P<who>[\w.@-]+) is in none of your groups", "{who} n'est dans aucun de vos groupes"),
    (r"at most (?P<n>\d+) tags", "au plus {n} étiquettes"),
    (r"tag (?P<tag>'[^']*'|\"[^\"]*\") must be 1-64 letters, digits, _ : -",
     "l'étiquette {tag} doit faire 1 à 64 lettres, chiffres, _ : -"),
    (r"(?P<value>'[^']*'|\"[^\"]*\"|\S+) is not a valid ticket (?P<name>\w+)",
     "{value} n'est pas une valeur de {name} valide"),
    (r"unknown status (?P<status>'[^']*'|\"[^\"]*\")", "statut inconnu {status}"),
    (r"(?P<name>\w+) must be a non-empty string", "{name} ne doit pas être vide"),
    (r"(?P<name>\w+) is longer than (?P<n>\d+) characters",
     "{name} dépasse {n} caractères"),
    (r"(?P<name>\w+) must not contain NUL characters",
     "{name} ne doit pas contenir de caractère NUL"),
    (r"macro (?P<name>'[^']*'|\"[^\"]*\") not found", "macro {name} introuvable"),
    (r"ticket (?P<id>\S+) not found", "ticket {id} introuvable"),
    (r"version (?P<version>'[^']*'|\"[^\"]*\") not found", "version {version} introuvable"),
    (r"actions, line (?P<line>\d+): not valid JSON \((?P<why>.+)\)",
     "actions, ligne {line} : JSON invalide ({why})"),
    (r"(?P<job>\S+) is not among the failed jobs \(retried already\?\)",
     "{job} n'est pas parmi les tâches en échec (déjà relancée ?)"),
    (r"the period may be at most (?P<n>\d+) days", "la période dure au plus {n} jours"),
    (r"(?P<end>since|until) must be a date \(2024-05-01\) or an ISO 8601 time",
     "{end} doit être une date (2024-05-01) ou une heure ISO 8601"),
    (r"(?P<end>since|until) must be between 1970 and 9000",
     "{end} doit être entre 1970 et 9000"),
    (r"unknown time zone (?P<zone>'[^']*'|\"[^\"]*\"): use an IANA name such as Europe/Paris",
     "fuseau horaire inconnu {zone} : donnez un nom IANA comme Europe/Paris"),
    (r"channel must be one of (?P<channels>[\w, ]+)", "le canal doit être l'un de {channels}"),
    (r"the form could not be read: (?P<why>.+)", "le formulaire n'a pas pu être lu : {why}"),
    (r"Saved as version (?P<v>\d+)", "Enregistrée comme version {v}"),
    (r"Version (?P<old>\d+) restored as version (?P<new>\d+)",
     "Version {old} rétablie comme version {new}"),
    (r"unknown action; use one of (?P<actions>[\w, ]+)",
     "action inconnue ; utilisez l'une de {actions}"),

    (r"the body did not arrive within (?P<s>[\d.]+) s",
     "la requête n'est pas arrivée entière en {s} s"),
    (r"no such group\(s\): (?P<groups>[\w., -]+)", "groupe(s) inconnu(s) : {groups}"),
    # Ticket fields (bridge/core/ticket_fields.py): "<key>: what the value must be".
    (r"(?P<key>[\w.-]+): text of at most (?P<n>\d+) characters",
     "{key} : un texte d'au plus {n} caractères"),
    (r"(?P<key>[\w.-]+): a number", "{key} : un nombre"),
    (r"(?P<key>[\w.-]+): true or false", "{key} : vrai ou faux"),
    (r"(?P<key>[\w.-]+): a date as YYYY-MM-DD", "{key} : une date au format AAAA-MM-JJ"),
    (r"(?P<key>[\w.-]+): one of (?P<options>[^:;]+)", "{key} : l'une des valeurs {options}"),
    (r"(?P<key>[\w.-]+): a list of (?P<options>[^:;]+)", "{key} : une liste parmi {options}"),
    (r"(?P<key>[\w.-]+): no such field on the form of tickets without a group",
     "{key} : ce champ n'est pas sur le formulaire des tickets sans groupe"),
    (r"(?P<key>[\w.-]+): no such field on the form of group (?P<group>[\w.-]+)",
     "{key} : ce champ n'est pas sur le formulaire du groupe {group}"),
    (r"(?P<count>\d+) locale variants; a macro may have at most (?P<n>\d+)",
     "{count} variantes de langue ; une macro en a au plus {n}"),
    (r"(?P<locale>'[^']*'|\"[^\"]*\") is not a locale such as en, fr or pt-BR",
     "{locale} n'est pas une langue comme en, fr ou pt-BR"),
    (r"template is (?P<size>\d+) bytes; the limit is (?P<n>\d+)",
     "le modèle fait {size} octets ; la limite est {n}"),
    (r"must be at most (?P<n>\d+) characters", "doit faire au plus {n} caractères"),
]
_COMPILED = [(re.compile(pattern), french) for pattern, french in _PATTERNS]
# "<field>: <message>" (the macro editor's problems): the field as it is, the message in
# French when it has a translation.
_FIELD_AND_MESSAGE = re.compile(r"(?P<field>[\w.\[\]-]+): (?P<message>.+)")


@functools.lru_cache(maxsize=1024)
def french_message(text: str) -> str | None:
    """The French of a run-time message, or None when it has none."""
    fixed = FRENCH_MESSAGES.get(text)
    if fixed is not None:
        return fixed
    for pattern, french in _COMPILED:
        match = pattern.fullmatch(text)
        if match:
            return french.format(**match.groupdict())
    parts = _FIELD_AND_MESSAGE.fullmatch(text)
    if parts:
        message = french_message(parts["message"])
        if message is not None:
            return f"{parts['field']} : {message}"
    return None
