"""Realistic help-desk traffic: customers and their message texts. No bridge imports: the
load generator imports this and must start fast."""

from __future__ import annotations

ACCOUNT_SID = "AC" + "0" * 32
BUSINESS_NUMBER = "whatsapp:+14155238886"

# Inbound WhatsApp texts as a help desk receives them (French and English, ~80 chars).
BODIES: tuple[str, ...] = (
    "Bonjour, ma commande n°48213 n'est toujours pas arrivée, pouvez-vous vérifier ?",
    "Hello, I was charged twice for my last order, can you refund one of the payments?",
    "Merci pour votre réponse rapide, je vais essayer ce que vous m'avez conseillé.",
    "The tracking link says delivered but I have nothing in my mailbox, what can I do?",
    "Est-ce que je peux changer l'adresse de livraison ? Je déménage la semaine pro.",
    "Hi! The app keeps logging me out every time I open it since the last update :(",
    "Je n'arrive pas à me connecter à mon compte, le code SMS ne m'arrive jamais.",
    "Could you send me the invoice for order 77120 with my company name on it please?",
    "Le produit est arrivé cassé, je vous envoie une photo. Remboursement possible ?",
    "Is it possible to cancel my subscription before the next billing date on the 3rd?",
    "D'accord, j'attends votre retour. Vous pouvez me joindre ici à tout moment.",
    "Thanks, that worked. One more question: do you ship to Belgium and Switzerland?",
    "Bonsoir, le colis est bloqué au dépôt depuis 5 jours, personne ne répond au tél.",
    "My promo code SUMMER24 is refused at checkout, it says expired but it's not yet.",
    "Je voudrais retourner la veste taille M et l'échanger contre une taille L svp.",
    "Any news about my ticket? I wrote yesterday and haven't heard back from anyone.",
)
NAMES: tuple[str, ...] = (
    "Camille", "Léa", "Hugo", "Chloé", "Lucas", "Manon", "Louis", "Emma", "Jules",
    "Inès", "Noah", "Sarah", "Arthur", "Zoé", "Gabriel", "Alice",
)


def contact_address(i: int) -> str:
    """The i-th customer: a French mobile number, `whatsapp:+336…`."""
    return f"whatsapp:+336{12_000_000 + i:08d}"
