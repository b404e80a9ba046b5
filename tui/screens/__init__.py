"""The app's screens: chat, models, library (knowledge base), help, and the small dialogs they open."""
