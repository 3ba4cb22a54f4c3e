"""placeholder"""
from flask_smorest import Blueprint

blp = Blueprint("webhooks", __name__, url_prefix="/v1/projects", description="Exports of the consensus")
