"""The workspace's two languages: English (the source strings) and French.

The language comes from the `lang` cookie (set by the switch in the header), else the
browser's Accept-Language, else English. A string without a French entry shows in English.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from bridge.web.workspace.i18n_messages import french_message

LANGUAGES = ("en", "fr")
LANG_COOKIE = "lang"

FRENCH: dict[str, str] = {
    "Workspace": "Espace de travail",
    "Sign in": "Se connecter",
    "Sign out": "Se déconnecter",
    "Token": "Jeton",
    "Your agent or admin token": "Votre jeton d'agent ou d'administrateur",
    "Unknown token": "Jeton inconnu",
    "The sign-in form had expired: sign in again":
        "Le formulaire de connexion avait expiré : connectez-vous à nouveau",
    "Tickets": "Tickets",
    "Macros": "Macros",
    "Reports": "Rapports",
    "Operations": "Exploitation",
    "Signed in as": "Connecté en tant que",
    "Filters": "Filtres",
    "Channel": "Canal",
    "Assignee": "Assigné à",
    "Tag": "Étiquette",
    "Customer (phone or name)": "Client (téléphone ou nom)",
    "Apply filters": "Filtrer",
    "Show solved and closed": "Afficher résolus et fermés",
    "any": "tous",
    "new": "nouveau",
    "open": "ouvert",
    "pending": "en attente",
    "hold": "suspendu",
    "solved": "résolu",
    "closed": "fermé",
    "reopened": "rouverts",
    "No tickets": "Aucun ticket",
    "Customer": "Client",
    "Age": "Âge",
    "Messages": "Messages",
    "Status": "Statut",
    "Ticket": "Ticket",
    "Thread": "Fil",
    "Older messages": "Messages précédents",
    "Newer messages": "Messages suivants",
    "Reply": "Répondre",
    "Send reply": "Envoyer la réponse",
    "Internal note": "Note interne",
    "Add note": "Ajouter la note",
    "Reply queued": "Réponse en file d'envoi",
    "Note added": "Note ajoutée",
    "Ticket updated": "Ticket mis à jour",
    "No change": "Aucun changement",
    "Session ended": "Session terminée",
    "Message to the customer": "Message au client",
    "Note for the team": "Note pour l'équipe",
    "Apply a macro": "Appliquer une macro",
    "Preview": "Aperçu",
    "Apply": "Appliquer",
    "Update ticket": "Mettre à jour le ticket",
    "A closed ticket cannot change": "Un ticket fermé ne change plus",
    "Tags (comma separated)": "Étiquettes (séparées par des virgules)",
    "Save": "Enregistrer",
    "End session": "Terminer la session",
    "Session": "Session",
    "Follow-up of": "Suite de",
    "Follow-ups": "Suites",
    "Other tickets of this customer": "Autres tickets de ce client",
    "Window open until": "Fenêtre ouverte jusqu'à",
    "Window closed: only a macro with an approved template can reach the customer":
        "Fenêtre fermée : seule une macro avec un modèle approuvé peut joindre le client",
    "unassigned": "non assigné",
    "Done": "Fait",
    "Error": "Erreur",
    "failed": "échec",
    "Edit": "Modifier",
    "Title": "Titre",
    "Version": "Version",
    "History": "Historique",
    "Roll back to this version": "Revenir à cette version",
    "Preview against ticket": "Aperçu sur le ticket",
    "Save macro": "Enregistrer la macro",
    "Only admins can edit macros": "Seuls les administrateurs peuvent modifier les macros",
    "Period": "Période",
    "From": "Du",
    "To": "Au",
    "To (included)": "Au (inclus)",
    "days included": "jours inclus",
    "Time zone": "Fuseau horaire",
    "Show": "Afficher",
    "Download CSV": "Télécharger en CSV",
    "median": "médiane",
    "90th percentile": "90e centile",
    "Queue depths": "Files d'attente",
    "Failed sends": "Envois en échec",
    "Retry": "Réessayer",
    "Relay lag": "Retard du relais",
    "Workers": "Workers",
    "Live updates": "Mises à jour en direct",
    "Language": "Langue",
    "created": "créés",
    "Tickets created and solved per day": "Tickets créés et résolus par jour",
    "Median and 90th percentile, in hours": "Médiane et 90e centile, en heures",
    "First reply time": "Délai de première réponse",
    "Full resolution time": "Délai de résolution complète",
    "Requester wait time": "Temps d'attente du demandeur",
    "Agent wait time": "Temps d'attente de l'agent",
    "Reopen rate": "Taux de réouverture",
    "Replies": "Réponses",
    "now": "maintenant",
    "all channels": "tous canaux",
    "Agents' figures cover all channels.": "Les chiffres des agents couvrent tous les canaux.",
    "Response times": "Délais",
    "Score (positive ÷ ratings)": "Score (positives ÷ notes)",
    "Response rate": "Taux de réponse",
    "Surveys sent": "Enquêtes envoyées",
    "Quality index": "Indice de qualité",
    "Agents": "Agents",
    "Agent": "Agent",
    "Median first reply": "Première réponse médiane",
    "Read": "Lecture",
    "Text": "Texte",
    "New locale (code)": "Nouvelle langue (code)",
    "Text of the new locale": "Texte de la nouvelle langue",
    "Actions (JSON)": "Actions (JSON)",
    "The macro was not saved:": "La macro n'a pas été enregistrée :",
    "Roll back": "Restaurer",
    "Changes from the version before": "Modifications depuis la version précédente",
    "Locales": "Langues",
    "Updated by": "Modifiée par",
    "Queue": "File",
    "overdue": "en retard",
    "Consumer": "Consommateur",
    "Changes waiting": "Changements en attente",
    "Oldest waiting": "Plus ancien en attente",
    "Job": "Tâche",
    "For": "Pour",
    "Failed at": "Échec à",
    "No failed jobs": "Aucune tâche en échec",
    "Local outbox": "Boîte d'envoi locale",
    "When": "Quand",
    "Message": "Message",
    "Sign in first": "Connectez-vous d'abord",
    "Signed out: reload to sign in": "Déconnecté : rechargez la page pour vous connecter",
    "Could not refresh: reload the page": "Actualisation impossible : rechargez la page",
    "This page is for admins": "Cette page est réservée aux administrateurs",
    "missing or wrong CSRF token: reload the page":
        "jeton CSRF absent ou erroné : rechargez la page",
    "Group": "Groupe",
    "shared pool": "file commune",
    "Ticket fields": "Champs du ticket",
    "required to solve": "requis pour résoudre",
    "Saved views": "Vues enregistrées",
    "shared": "partagée",
    "personal": "personnelle",
    "Groups of this view": "Groupes de cette vue",
    "none": "aucun",
    "First page": "Première page",
    "Next page": "Page suivante",
    "Tickets updated": "Tickets mis à jour",
    "Thread updated": "Fil mis à jour",
    "all lists": "toutes les listes",
    "Available for assignment": "Disponible pour l'assignation",
    "yes": "oui",
    "no": "non",
    "You are available for assignment": "Vous êtes disponible pour l'assignation",
    "You are not available for assignment": "Vous n'êtes pas disponible pour l'assignation",
    "Skip to content": "Aller au contenu",
    "Figure": "Indicateur",
    # The error page's own words for what the edge answers (bridge/web/middlewares.py).
    "Not Found": "Page introuvable",
    "not found": "introuvable",
    "internal error": "erreur interne",
    "storage is unavailable, retry later": "stockage indisponible, réessayez plus tard",
    "since must be before until": "le début doit précéder la fin",
}


def language(request: web.Request) -> str:
    chosen = request.cookies.get(LANG_COOKIE, "")
    if chosen in LANGUAGES:
        return chosen
    for part in request.headers.get("Accept-Language", "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return "en"


def translator(lang: str) -> Callable[[str], str]:
    if lang == "fr":
        return french
    return lambda text: text


def french(text: str) -> str:
    """The page's words (FRENCH), else a message made at run time (i18n_messages), else
    the English."""
    fixed = FRENCH.get(text)
    if fixed is not None:
        return fixed
    return french_message(text) or text
